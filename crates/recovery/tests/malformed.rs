//! Malformed scenario files get a clear error naming the field and where it
//! is; nothing panics on any input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use proptest::prelude::*;
use tether_recovery::scenario::{Scenario, ScenarioError};
use tether_recovery::simulation;

fn error_of(text: &str) -> String {
    match Scenario::from_json(text, "t") {
        Ok(_) => panic!("accepted a malformed scenario:\n{text}"),
        Err(err @ ScenarioError::Invalid { .. }) => err.to_string(),
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

#[test]
fn each_mistake_names_its_field_and_position() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("not json", "this is not json", &["line 1"]),
        ("truncated", r#"{"events":[{"at_ms":1,"#, &["events[0]", "line 1"]),
        ("trailing text", r#"{"events":[]} {"#, &["trailing characters"]),
        ("unknown top-level field", r#"{"evnts":[]}"#, &["evnts", "unknown field"]),
        (
            "unknown event field",
            r#"{"events":[{"at_ms":0,"signaling_lost":true,"colour":"red"}]}"#,
            &["events[0]", "colour"],
        ),
        (
            "bad availability",
            "{\"events\":[\n{\"at_ms\":0,\"path\":{\"sequence\":1,\"availability\":\"up\"}}]}",
            &["events[0].path.availability", "unknown variant `up`", "line 2"],
        ),
        (
            "bad transport",
            r#"{"events":[{"at_ms":0,"path":{"sequence":1,"availability":"available","transports":["wifi","5g"]}}]}"#,
            &["events[0].path.transports[1]", "5g"],
        ),
        (
            "negative time",
            r#"{"events":[{"at_ms":-5,"signaling_lost":true}]}"#,
            &["events[0].at_ms", "invalid value"],
        ),
        (
            "time as string",
            r#"{"events":[{"at_ms":"10","signaling_lost":true}]}"#,
            &["events[0].at_ms", "invalid type"],
        ),
        ("missing at_ms", r#"{"events":[{"signaling_lost":true}]}"#, &["events[0]", "at_ms"]),
        (
            "two kinds in one event",
            r#"{"events":[{"at_ms":0,"lifecycle":"background","cleanup":"user_logout"}]}"#,
            &["events[0]", "exactly one", "lifecycle, cleanup"],
        ),
        ("no kind", r#"{"events":[{"at_ms":0}]}"#, &["events[0]", "found none"]),
        (
            "duration on background",
            r#"{"events":[{"at_ms":0,"lifecycle":"background","background_duration_ms":5}]}"#,
            &["events[0]", "background_duration_ms"],
        ),
        (
            "signaling_lost false",
            r#"{"events":[{"at_ms":0,"signaling_lost":false}]}"#,
            &["events[0]", "signaling_lost: must be true"],
        ),
        (
            "bad cleanup reason",
            r#"{"events":[{"at_ms":0,"cleanup":"logout"}]}"#,
            &["events[0].cleanup", "user_logout"],
        ),
        (
            "huge time",
            r#"{"events":[{"at_ms":18446744073709551615,"signaling_lost":true}]}"#,
            &["events[0]", "at_ms", "limit"],
        ),
        ("bad start phase", r#"{"start":{"phase":"asleep"}}"#, &["start.phase", "asleep"]),
        ("unknown start field", r#"{"start":{"wifi":true}}"#, &["start", "wifi"]),
        ("jitter out of range", r#"{"policy":{"jitter":1.5}}"#, &["policy.jitter"]),
        (
            "cap below base",
            r#"{"policy":{"backoff_base_ms":500,"backoff_cap_ms":100}}"#,
            &["policy.backoff_cap_ms"],
        ),
        ("zero backoff", r#"{"policy":{"backoff_base_ms":0}}"#, &["policy.backoff_base_ms"]),
        ("unknown policy knob", r#"{"policy":{"grace":1}}"#, &["policy", "grace"]),
        (
            "nth zero",
            r#"{"effects":{"fail":[{"action":"restore","nth":0,"error":"timeout"}]}}"#,
            &["effects.fail[0]", "nth"],
        ),
        (
            "bad error name",
            r#"{"effects":{"fail":[{"action":"restore","nth":1,"error":"boom"}]}}"#,
            &["effects.fail[0].error", "boom"],
        ),
        (
            "bad action name",
            r#"{"expect":{"starts":[{"action":"rebuild","at_ms":0}]}}"#,
            &["expect.starts[0].action", "rebuild"],
        ),
        (
            "inverted window",
            r#"{"expect":{"starts":[{"action":"restore","at_ms":[300,200]}]}}"#,
            &["expect.starts[0].at_ms", "min above max"],
        ),
        (
            "window of three",
            r#"{"expect":{"starts":[{"action":"restore","at_ms":[1,2,3]}]}}"#,
            &["expect.starts[0].at_ms"],
        ),
        (
            "bad final state",
            r#"{"expect":{"final":{"state":"happy"}}}"#,
            &["expect.final.state", "happy"],
        ),
        (
            "run ends before last event",
            r#"{"run_ms":10,"events":[{"at_ms":20,"signaling_lost":true}]}"#,
            &["run_ms", "before the last event"],
        ),
        ("events not a list", r#"{"events":{}}"#, &["events", "invalid type"]),
    ];
    for (what, text, needles) in cases {
        let message = error_of(text);
        for needle in *needles {
            assert!(message.contains(needle), "{what}: {message:?} does not mention {needle:?}");
        }
    }
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let scenario =
        Scenario::from_json(r#"{"events":[{"at_ms":5,"signaling_lost":true}]}"#, "stem").unwrap();
    assert_eq!(scenario.name, "stem");
    assert_eq!(scenario.run_ms, 30_005);
    assert_eq!(scenario.effects.duration_ms, 30);
    assert!(scenario.start.signaling_connected);
    assert_eq!(scenario.policy, tether_recovery::PolicyConfig::default());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = Scenario::from_json(&text, "t");
    }

    /// A valid scenario with one byte changed either parses and runs, or
    /// gets an error; never a panic.
    #[test]
    fn mutated_scenarios_never_panic(index in 0usize..2000, byte in any::<u8>()) {
        let mut bytes = include_bytes!("../../../scenarios/restore_backoff_then_reconnect.json").to_vec();
        let at = index % bytes.len();
        bytes[at] = byte;
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(scenario) = Scenario::from_json(&text, "t")
        {
            simulation::run(&scenario, Instant::now()).unwrap();
        }
    }
}
