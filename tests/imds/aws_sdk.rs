//! A client we did not write agrees with our simulator: the AWS SDK for Rust's own IMDS client
//! (always IMDSv2) against `simulate imds` in `required` mode.

use aws_config::imds::Client;
use serde_json::json;
use sih_sim_imds::TokenMode;

use crate::support::{Control, sim, summary};

#[tokio::test]
async fn aws_sdk_imds_client_reads_identity_and_spot_notice_in_required_mode() {
    let sim = sim(TokenMode::Required).await;
    let sdk = Client::builder()
        .endpoint(sim.url())
        .expect("endpoint accepted")
        .build();

    let id = sdk.get("/latest/meta-data/instance-id").await.unwrap();
    assert_eq!(id.as_ref(), "i-0123456789abcdef0");
    let az = sdk
        .get("/latest/meta-data/placement/availability-zone")
        .await
        .unwrap();
    assert_eq!(az.as_ref(), "us-east-1a");

    let missing = sdk.get("/latest/meta-data/spot/instance-action").await;
    assert!(missing.is_err(), "no notice yet is a 404 to the SDK");

    let set = Control::of(&sim)
        .post(
            "spot-interruption",
            json!({"action": "stop", "lead_seconds": 120}),
        )
        .await;
    let notice = sdk
        .get("/latest/meta-data/spot/instance-action")
        .await
        .unwrap();
    let notice: serde_json::Value = serde_json::from_str(notice.as_ref()).unwrap();
    assert_eq!(notice["action"], "stop");
    assert_eq!(notice["time"], set["time"]);

    let log = summary(&Control::of(&sim).take_requests().await);
    let put = log
        .iter()
        .find(|e| e.0 == "PUT")
        .expect("the SDK asked for a token");
    assert_eq!(
        put.2, 200,
        "the SDK accepted our token answer (it needs the TTL echoed)"
    );
    assert!(
        log.iter().filter(|e| e.0 == "GET").all(|e| e.3 == "valid"),
        "{log:?}"
    );
}
