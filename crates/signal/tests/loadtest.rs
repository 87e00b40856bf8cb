//! The load generator behind `tether bench signal`, run small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tether_signal::loadtest::{LoadConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_load_test_delivers_every_message() {
    let mut config = LoadConfig::new(20);
    config.rate = 400;
    config.seconds = 1.0;
    let report = run(config).await.unwrap();
    assert_eq!(report.clients, 20);
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.sent, 400, "{report:?}");
    assert_eq!(report.received, report.sent, "{report:?}");
    assert!(report.relay_p50_us > 0.0 && report.relay_p50_us <= report.relay_p99_us, "{report:?}");
    assert!(report.relay_p99_us <= report.relay_max_us, "{report:?}");
    let json = serde_json::to_value(&report).unwrap();
    for key in ["clients", "relay_p50_us", "relay_p99_us", "errors"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
}

#[tokio::test]
async fn nonsense_configurations_are_refused() {
    let mut config = LoadConfig::new(1);
    assert!(run(config.clone()).await.is_err());
    config.clients = 2;
    config.rate = 0;
    assert!(run(config).await.is_err());
}
