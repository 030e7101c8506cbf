//! The simulator's HTTP surface as EC2 presents it, checked with a plain HTTP client.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sih_sim_imds::TokenMode;

use crate::support::{Control, sim, summary};

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";

async fn token(http: &reqwest::Client, base: &str) -> String {
    http.put(format!("{base}/latest/api/token"))
        .header(TTL, "60")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn items_are_text_plain_and_absent_items_are_an_xhtml_404() {
    let sim = sim(TokenMode::Optional).await;
    let http = reqwest::Client::new();
    let base = sim.url();

    let ok = http
        .get(format!("{base}/latest/meta-data/instance-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["content-type"], "text/plain");
    assert_eq!(ok.headers()["server"], "EC2ws");
    assert_eq!(ok.text().await.unwrap(), "i-0123456789abcdef0");

    let doc = http
        .get(format!("{base}/latest/dynamic/instance-identity/document"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        doc.headers()["content-type"],
        "text/plain",
        "JSON items are text/plain too"
    );
    let doc: Value = serde_json::from_str(&doc.text().await.unwrap()).unwrap();
    for key in [
        "accountId",
        "architecture",
        "availabilityZone",
        "billingProducts",
        "devpayProductCodes",
        "marketplaceProductCodes",
        "imageId",
        "instanceId",
        "instanceType",
        "kernelId",
        "pendingTime",
        "privateIp",
        "ramdiskId",
        "region",
        "version",
    ] {
        assert!(doc.get(key).is_some(), "identity document has {key}");
    }

    for absent in [
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data/events/recommendations/rebalance",
        "/latest/meta-data/autoscaling/target-lifecycle-state",
        "/latest/meta-data/tags/instance/Name",
        "/latest/meta-data/no/such/thing",
        "/nonsense/meta-data/instance-id",
    ] {
        let resp = http.get(format!("{base}{absent}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{absent}");
        assert_eq!(resp.headers()["server"], "EC2ws");
        let body = resp.text().await.unwrap();
        assert!(body.starts_with("<?xml") && body.contains("<title>404 - Not Found</title>"));
    }

    for (path, want) in [
        ("/latest/meta-data/public-ipv4", "203.0.113.10"),
        (
            "/latest/meta-data/public-hostname",
            "ec2-203-0-113-10.compute-1.amazonaws.com",
        ),
        (
            "/latest/meta-data/tags/instance/aws:autoscaling:groupName",
            "spot-nodes",
        ),
        ("/latest/meta-data/events/maintenance/scheduled", "[]"),
        ("/latest/meta-data/events/maintenance/history", "[]"),
        (
            "/latest/meta-data/placement/availability-zone/",
            "us-east-1a",
        ),
        ("/2021-03-23/meta-data/placement/region", "us-east-1"),
        ("/latest/", "dynamic\nmeta-data"),
        (
            "/latest/meta-data/placement/",
            "availability-zone\navailability-zone-id\nregion",
        ),
    ] {
        let body = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, want, "{path}");
    }
}

#[tokio::test]
async fn directory_listing_shows_spot_only_while_a_notice_is_pending() {
    let sim = sim(TokenMode::Optional).await;
    let http = reqwest::Client::new();
    let listing = || async {
        http.get(format!("{}/latest/meta-data/", sim.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = listing().await;
    assert!(before.lines().any(|l| l == "placement/"));
    assert!(!before.lines().any(|l| l == "spot/"));
    Control::of(&sim).post("spot-interruption", json!({})).await;
    assert!(listing().await.lines().any(|l| l == "spot/"));
    let spot = http
        .get(format!("{}/latest/meta-data/spot/", sim.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(spot, "instance-action\ntermination-time");
}

#[tokio::test]
async fn token_requests_follow_ec2_rules() {
    let sim = sim(TokenMode::Optional).await;
    let http = reqwest::Client::new();
    let base = sim.url();
    let put = |path: &str, ttl: Option<&str>| {
        let mut req = http.put(format!("{base}{path}"));
        if let Some(ttl) = ttl {
            req = req.header(TTL, ttl);
        }
        req.send()
    };

    for bad in [
        None,
        Some("0"),
        Some("21601"),
        Some("abc"),
        Some("-5"),
        Some(""),
    ] {
        let resp = put("/latest/api/token", bad).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "TTL {bad:?}");
    }
    for good in ["1", "21600"] {
        let resp = put("/latest/api/token", Some(good)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[TTL], good, "TTL is echoed");
        assert_eq!(resp.text().await.unwrap().len(), 56);
    }
    let versioned = put("/2021-03-23/api/token", Some("60")).await.unwrap();
    assert_eq!(versioned.status(), StatusCode::FORBIDDEN);
    let forwarded = http
        .put(format!("{base}/latest/api/token"))
        .header(TTL, "60")
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), StatusCode::FORBIDDEN);
    let get_token_path = http
        .get(format!("{base}/latest/api/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(get_token_path.status(), StatusCode::METHOD_NOT_ALLOWED);
    let post_item = http
        .post(format!("{base}/latest/meta-data/instance-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(post_item.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn unauthorized_rules_in_each_mode() {
    let http = reqwest::Client::new();
    let item = "/latest/meta-data/instance-id";

    let optional = sim(TokenMode::Optional).await;
    let base = optional.url();
    let v1 = http.get(format!("{base}{item}")).send().await.unwrap();
    assert_eq!(v1.status(), StatusCode::OK, "optional mode serves IMDSv1");
    let forged = http
        .get(format!("{base}{item}"))
        .header(TOKEN, "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::UNAUTHORIZED,
        "an invalid token is refused even when optional"
    );

    let required = sim(TokenMode::Required).await;
    let base = required.url();
    let v1 = http.get(format!("{base}{item}")).send().await.unwrap();
    assert_eq!(v1.status(), StatusCode::UNAUTHORIZED);
    assert!(v1.text().await.unwrap().contains("401 - Unauthorized"));
    let t = token(&http, &base).await;
    let v2 = http
        .get(format!("{base}{item}"))
        .header(TOKEN, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), StatusCode::OK);
    Control::of(&required)
        .post("expire-tokens", json!({}))
        .await;
    let expired = http
        .get(format!("{base}{item}"))
        .header(TOKEN, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);

    let log = summary(&Control::of(&required).take_requests().await);
    let tokens: Vec<&str> = log.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(tokens, ["none", "none", "valid", "expired"]);
}

#[tokio::test]
async fn control_api_rejects_bad_requests_with_a_clear_message() {
    let sim = sim(TokenMode::Optional).await;
    let ctl = Control::of(&sim);
    let cases = [
        ("spot-interruption", json!({"action": "explode"})),
        ("spot-interruption", json!({"lead_seconds": -1})),
        ("spot-interruption", json!({"unknown_field": 1})),
        ("scheduled-event", json!({"code": "coffee-break"})),
        (
            "scheduled-event",
            json!({"code": "system-reboot", "not_before_seconds": 60, "not_after_seconds": 30}),
        ),
        ("asg-lifecycle", json!({"state": "terminated"})),
        ("faults", json!({"status": 503, "rate": 1.5})),
        ("faults", json!({"status": 42})),
        ("items", json!({"path": "/etc/passwd", "body": "x"})),
        ("imdsv2", json!({"mode": "sometimes"})),
    ];
    for (path, body) in cases {
        let (status, reply) = ctl.try_post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {reply}"
        );
    }
    let (status, reply) = ctl
        .try_post("scheduled-event/instance-event-nope/cancel", json!({}))
        .await;
    assert_eq!(status, 404, "{reply}");

    // Not JSON at all, with curl's default form content type.
    let resp = reqwest::Client::new()
        .post(format!("{}/_sim/spot-interruption", sim.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // An empty body takes the defaults: terminate, 120 s of lead.
    let resp = reqwest::Client::new()
        .post(format!("{}/_sim/spot-interruption", sim.url()))
        .send()
        .await
        .unwrap();
    let notice: Value = resp.json().await.unwrap();
    assert_eq!(notice["action"], "terminate");
}

#[tokio::test]
async fn control_api_expresses_started_windows_absolute_times_and_restated_notices() {
    let sim = sim(TokenMode::Optional).await;
    let control = Control::of(&sim);
    let http = reqwest::Client::new();
    let base = sim.url();
    let scheduled = || async {
        let body = http
            .get(format!(
                "{base}/latest/meta-data/events/maintenance/scheduled"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str::<Value>(&body).unwrap()
    };
    control
        .post(
            "scheduled-event",
            json!({"code": "system-reboot", "not_before_seconds": -300}),
        )
        .await;
    control
        .post(
            "scheduled-event",
            json!({"code": "instance-stop", "not_before": "2030-01-02T03:04:05Z",
                   "not_after": "2 Jan 2030 05:04:05 GMT"}),
        )
        .await;
    let events = scheduled().await;
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(290);
    let not_before = |e: &Value| {
        jiff::civil::DateTime::strptime("%d %b %Y %H:%M:%S GMT", e["NotBefore"].as_str().unwrap())
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
    };
    assert!(
        not_before(&events[0]) < started,
        "the window opened 5 min ago"
    );
    assert!(events[0]["NotAfter"].is_string(), "NotAfter by default");
    assert_eq!(events[1]["NotBefore"], "2 Jan 2030 03:04:05 GMT");
    assert_eq!(events[1]["NotAfter"], "2 Jan 2030 05:04:05 GMT");
    for bad in [
        json!({"code": "system-reboot", "not_before": "soon"}),
        json!({"code": "system-reboot", "not_before": "2030-01-02T03:04:05Z", "not_before_seconds": 5}),
        json!({"code": "system-reboot", "not_before_seconds": 60, "not_after_seconds": 30}),
    ] {
        let (status, answer) = control.try_post("scheduled-event", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    // A restated spot notice: every read shows now + lead.
    control
        .post(
            "spot-interruption",
            json!({"lead_seconds": 120, "restate": true}),
        )
        .await;
    let read = || async {
        let body = http
            .get(format!("{base}/latest/meta-data/spot/instance-action"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["time"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = read().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_ne!(read().await, first, "restated on every read");
}
