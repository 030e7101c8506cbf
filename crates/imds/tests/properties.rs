//! Property tests of every parser of metadata items: whatever body a metadata service serves,
//! a parser answers a value or a typed error, never a panic; and a malformed part never hides
//! a valid one. `PROPTEST_CASES` sets how many cases each property tries (256 by default; the
//! long run in docs/reliability.md uses 100 000).

use proptest::prelude::*;
use sih_imds::items::{
    format_scheduled_time, parse_identity_document, parse_instance_action, parse_rebalance,
    parse_rfc3339, parse_scheduled_events, parse_scheduled_time, parse_target_lifecycle_state,
    parse_termination_time,
};
use sih_imds::{ScheduledEventState, SpotAction};

/// Bodies that look like what a metadata service serves, and some that do not.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        r#"\{"action":"[a-z]{0,10}","time":"[0-9TZ:.+-]{0,25}"\}"#,
        r#"\[\{"NotBefore":"[0-9A-Za-z :]{0,30}","Code":"[a-z-]{0,20}","EventId":"[a-z0-9-]{0,20}","State":"[a-z]{0,10}"\}\]"#,
        r#"\{"noticeTime":"[0-9TZ:-]{0,25}"\}"#,
    ]
}

proptest! {
    #[test]
    fn no_body_makes_a_parser_panic(b in body()) {
        let _ = parse_instance_action(&b);
        let _ = parse_termination_time(&b);
        let _ = parse_rebalance(&b);
        let _ = parse_scheduled_events(&b);
        let _ = parse_target_lifecycle_state(&b);
        let _ = parse_identity_document(&b);
        let _ = parse_scheduled_time(&b);
        let _ = parse_rfc3339(&b);
    }

    /// Any action word with a valid time is a notice: a known action as itself, an unknown
    /// one as terminate (EC2 takes the instance either way).
    #[test]
    fn a_valid_time_is_never_lost_to_an_odd_action(action in "[a-z]{0,12}", secs in 0i64..4_000_000_000) {
        let time = jiff::Timestamp::from_second(secs).unwrap();
        let body = format!(r#"{{"action":"{action}","time":"{time}"}}"#);
        let read = parse_instance_action(&body).unwrap();
        prop_assert_eq!(read.time, Some(time));
        match action.parse::<SpotAction>() {
            Ok(a) => prop_assert_eq!((read.action, read.unknown_action), (a, None)),
            Err(_) => prop_assert_eq!((read.action, read.unknown_action), (SpotAction::Terminate, Some(action))),
        }
    }

    /// Valid events among broken entries are all read; every entry is either read or reported.
    #[test]
    fn malformed_scheduled_events_never_hide_valid_ones(
        entries in prop::collection::vec((any::<bool>(), 0i64..4_000_000_000, "[a-z0-9]{1,12}", any::<String>()), 0..12)
    ) {
        let mut items = Vec::new();
        let mut want = Vec::new();
        for (i, (valid, secs, id, junk)) in entries.iter().enumerate() {
            let id = format!("ev-{i}-{id}");
            if *valid {
                let t = format_scheduled_time(jiff::Timestamp::from_second(*secs).unwrap());
                items.push(serde_json::json!({"NotBefore": t, "Code": "system-reboot", "EventId": id, "State": "active", "Description": junk}));
                want.push(id);
            } else {
                items.push(serde_json::json!({"NotBefore": junk, "Code": 7, "EventId": id, "State": junk}));
            }
        }
        let read = parse_scheduled_events(&serde_json::Value::Array(items).to_string()).unwrap();
        let got: Vec<String> = read.events.iter().map(|e| e.event_id.clone()).collect();
        prop_assert_eq!(&got, &want);
        prop_assert!(read.events.iter().all(|e| e.state == ScheduledEventState::Active));
        prop_assert_eq!(read.events.len() + read.malformed.len(), entries.len());
    }
}
