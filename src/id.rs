//! Newtype ids, so a participant id can never be passed where a track id is meant.

use std::fmt;

macro_rules! string_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                s.strip_prefix($prefix)
                    .and_then(|n| n.parse().ok())
                    .map($name)
                    .ok_or(())
            }
        }

        // On the wire ids are strings ("p3", "t7"): JavaScript cannot hold every u64.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|_| {
                    serde::de::Error::custom(concat!("expected an id like ", $prefix, "1"))
                })
            }
        }
    };
}

string_id!(ParticipantId, "p");
string_id!(TrackId, "t");

/// One subscriber leg of one track: the rtc layer's handle for a consumer's send queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

/// What a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_prefixed_strings() {
        assert_eq!(ParticipantId(3).to_string(), "p3");
        assert_eq!("t42".parse::<TrackId>(), Ok(TrackId(42)));
        assert!("p42".parse::<TrackId>().is_err());
        assert!("t".parse::<TrackId>().is_err());
        let json = serde_json::to_string(&ParticipantId(7)).unwrap();
        assert_eq!(json, "\"p7\"");
        assert!(serde_json::from_str::<ParticipantId>("\"x\"").is_err());
    }
}
