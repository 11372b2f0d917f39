//! Turnover: a participant that stays while others come and go keeps its connection,
//! receives each newcomer, and its connection carries the m-sections of who is there
//! now (departed publishers' m-sections are reused), not one per track that ever was.

mod common;

use common::client;
use common::{http_get_json, start_server, wait_until};
use serde_json::Value;

const GUESTS: usize = 12;

/// (m-sections carrying a track, spare ones) on `participant`'s connection.
fn send_sections(stats: &Value, participant: &str) -> Option<(u64, u64)> {
    let downlinks = stats["shards"][0]["downlinks"].as_array()?;
    let d = downlinks
        .iter()
        .find(|d| d["participant_id"] == participant)?;
    Some((
        d["send_sections"][0].as_u64()?,
        d["send_sections"][1].as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_participant_reuses_m_sections_through_turnover() {
    let server = start_server().await;
    let stats_url = format!("{}/api/stats", server.http);
    let stats = || http_get_json(&stats_url);
    let ada = client::join(&server.ws, "churn", "Ada").await;
    let mut peak = (0, 0);
    for i in 0..GUESTS {
        let guest = client::join(&server.ws, "churn", &format!("Guest{i}")).await;
        let gid = guest.id.clone();
        let receives = wait_until(20, || {
            ada.shared.packets_from(&gid, "video") >= 30
                && ada.shared.packets_from(&gid, "audio") >= 30
        })
        .await;
        assert!(
            receives,
            "guest {i}: Ada receives the newcomer's video ({}) and audio ({})",
            ada.shared.packets_from(&gid, "video"),
            ada.shared.packets_from(&gid, "audio")
        );
        let (carrying, spare) = send_sections(&stats().await, &ada.id).expect("Ada's downlink");
        eprintln!("guest {i}: Ada's connection sends on {carrying} m-sections, {spare} spare");
        peak = (peak.0.max(carrying), peak.1.max(spare));
        guest.leave().await;
        // Her connection lets go of the guest's two m-sections before the next comes.
        let mut after = None;
        for _ in 0..100 {
            after = send_sections(&stats().await, &ada.id);
            if after.is_some_and(|(c, _)| c == 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            after.map(|a| a.0),
            Some(0),
            "guest {i} left: nothing is carried to Ada"
        );
    }
    assert_eq!(peak.0, 2, "one guest at a time: a camera and a microphone");
    assert!(
        peak.1 <= 2,
        "{GUESTS} guests came and went through two reused m-sections (spares at most {})",
        peak.1
    );
    let (_, spare) = send_sections(&stats().await, &ada.id).unwrap();
    assert!(spare <= 2, "{spare} spare m-sections after {GUESTS} guests");
    let rooms = http_get_json(&format!("{}/api/rooms", server.http)).await;
    let ids: Vec<&str> = rooms[0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, vec![ada.id.as_str()], "Ada is still herself, alone");
    ada.leave().await;
}
