//! The three load shapes, after LiveKit's published benchmark so figures compare:
//! a livestream (one video publisher, many viewers), a meeting (everyone publishes video
//! and receives everyone else), an audio room (a few speakers, many listeners).

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Livestream,
    Meeting,
    AudioRoom,
}

/// Who is in each room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    pub rooms: usize,
    /// Publish video and audio (and, in a meeting, receive everyone else).
    pub video_publishers: usize,
    /// Publish audio only.
    pub audio_publishers: usize,
    /// Receive only.
    pub subscribers: usize,
}

impl Scenario {
    /// Sized by default (scale 1) for a 2-core machine running the server and the load
    /// tester side by side; `scale` multiplies the crowd.
    pub fn shape(self, scale: usize) -> Shape {
        let scale = scale.max(1);
        match self {
            Scenario::Livestream => Shape {
                rooms: 1,
                video_publishers: 1,
                audio_publishers: 0,
                subscribers: 25 * scale,
            },
            Scenario::Meeting => Shape {
                rooms: 1,
                video_publishers: 2 + 4 * scale,
                audio_publishers: 0,
                subscribers: 0,
            },
            Scenario::AudioRoom => Shape {
                rooms: 1,
                video_publishers: 0,
                audio_publishers: 2,
                subscribers: 40 * scale,
            },
        }
    }
}

impl Shape {
    pub fn participants_per_room(&self) -> usize {
        self.video_publishers + self.audio_publishers + self.subscribers
    }

    /// Forwarded streams per room: every published track goes to every other member.
    pub fn forwarded_streams_per_room(&self) -> usize {
        let members = self.participants_per_room();
        let tracks = self.video_publishers * 2 + self.audio_publishers;
        tracks * members.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_grows_the_crowd() {
        assert_eq!(Scenario::Livestream.shape(2).subscribers, 50);
        assert_eq!(Scenario::Meeting.shape(1).video_publishers, 6);
        assert_eq!(Scenario::AudioRoom.shape(0), Scenario::AudioRoom.shape(1));
    }

    #[test]
    fn a_six_person_meeting_forwards_sixty_streams() {
        assert_eq!(
            Scenario::Meeting.shape(1).forwarded_streams_per_room(),
            6 * 2 * 5
        );
    }
}
