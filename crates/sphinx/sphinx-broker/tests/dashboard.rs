//! The broker as an operator watches it: the dashboard page in a real
//! headless Chromium, and the metrics scraped by a real Prometheus, both
//! against real processes (lssd, the broker, the signer, lightningd's side
//! driven by the test).

mod driver;

use driver::checks::{ecdh, key, lss_broker, new_channel, peer};
use driver::{lssd_binary, Broker, SignerHome};
use lk_testkit::browser::{Browser, Locator};
use lk_testkit::process::LssdProcess;
use lk_testkit::prometheus::{metrics_addr, Prometheus};
use secp256k1::Secp256k1;
use sphinx_wire::control::{self, ControlMessage};
use vls_protocol::model::{DisclosedSecret, PubKey};
use vls_protocol::msgs::{self, DeBolt, Message};

fn lssd(dir: &std::path::Path) -> LssdProcess {
    let data = dir.join("lssd");
    LssdProcess::spawn(
        &lssd_binary(),
        &["--data-dir", data.to_str().expect("utf8")],
    )
    .expect("lssd")
}

/// Broker on the LSS server at `lss_url` with a ready signer.
fn ready(
    dir: &std::path::Path,
    lss_url: &str,
    extra: &[&str],
) -> (Broker, SignerHome, driver::Proc) {
    let home = SignerHome::create(&dir.join("signer"));
    let mut broker = lss_broker(dir, lss_url, &home, extra);
    let signer = home.start_lss(&broker.url(), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));
    (broker, home, signer)
}

/// A request the signer refuses, so it reports an error (the channel is unknown).
fn provoke_signer_error(broker: &mut Broker) {
    let mut channel = broker
        .master
        .client(key(9).public_key(&Secp256k1::new()).serialize(), 77);
    channel.send(&msgs::CheckFutureSecret {
        commitment_number: 1,
        secret: DisclosedSecret([7; 32]),
    });
    assert!(
        channel.recv().is_none(),
        "the broker closes the refused client"
    );
}

#[test]
fn dashboard_in_chromium_shows_the_signer_requests_lss_policy_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path());
    let (mut broker, home, mut signer) = ready(dir.path(), &lss.url, &[]);
    let cid = home.cid();
    let token = broker.api_token();
    let page = format!("http://127.0.0.1:{}/dashboard", broker.http_port);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let browser = runtime.block_on(async {
        let browser = Browser::start().await;
        browser
            .client
            .goto(&page)
            .await
            .expect("open the dashboard");
        // Without the token nothing but the form is shown.
        browser
            .wait_until("the token form", "!document.getElementById('login').hidden")
            .await;
        assert_eq!(
            browser
                .text("document.getElementById('board').hidden")
                .await,
            "true"
        );
        // A wrong token is refused and the form stays.
        let form = |value: &str| {
            format!(
                "document.getElementById('token').value = '{value}'; \
                 document.getElementById('login-button').click()"
            )
        };
        browser
            .client
            .execute(&form("wrong"), vec![])
            .await
            .expect("submit");
        browser
            .wait_until(
                "the refusal",
                "document.getElementById('status-line').textContent.includes('refused')",
            )
            .await;
        // Typed like a user would, then kept for the session.
        let input = browser
            .client
            .find(Locator::Css("#token"))
            .await
            .expect("token field");
        input.clear().await.expect("clear the field");
        input.send_keys(&token).await.expect("type the token");
        browser
            .client
            .find(Locator::Css("#login-button"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        browser
            .wait_until(
                "the signer, ready",
                &format!("document.querySelector('tr[data-cid=\"{cid}\"][data-state=\"ready\"]')"),
            )
            .await;
        browser
            .wait_until(
                "LSS reachable",
                &format!(
                    "document.querySelector('tr[data-url=\"{}\"][data-reachable=\"true\"]')",
                    lss.url
                ),
            )
            .await;
        browser.client.refresh().await.expect("reload");
        browser
            .wait_until(
                "the token kept across a reload",
                "!document.getElementById('board').hidden",
            )
            .await;
        browser
    });

    let total =
        |b: &Browser| runtime.block_on(b.text("document.getElementById('total').textContent"));
    let before: u64 = total(&browser).parse().expect("a count");
    ecdh(&mut broker.master, &home, 3);
    new_channel(&mut broker.master, 5);
    runtime.block_on(browser.wait_until(
        "the request counter moving by two",
        &format!(
            "Number(document.getElementById('total').textContent) >= {}",
            before + 2
        ),
    ));
    runtime.block_on(browser.wait_until(
        "a latency",
        "document.getElementById('p50').textContent !== '–'",
    ));

    // A policy and allowlist reported by the signer in a control response.
    let node = home.node_secret();
    let query = hex::encode(control::sign(&ControlMessage::QueryAll, 1, &node));
    let (status, body) = broker.http("POST", &format!("/api/control/{cid}"), Some(&token), &query);
    assert_eq!(status, 200, "{body}");
    runtime.block_on(browser.wait_until(
        "the reported policy",
        "document.getElementById('reported').textContent.includes('msat per')",
    ));

    // A signer error appears live.
    provoke_signer_error(&mut broker);
    runtime.block_on(browser.wait_until(
        "the signer's error in the live list",
        "document.getElementById('errors').textContent.includes('CheckFutureSecret')",
    ));
    let shot =
        runtime.block_on(browser.screenshot(env!("CARGO_TARGET_TMPDIR"), "broker-dashboard"));
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 1000);
    eprintln!("dashboard screenshot: {}", shot.display());

    // The signer goes; the dashboard sees it.
    signer.kill();
    runtime.block_on(browser.wait_until(
        "the signer gone",
        &format!("!document.querySelector('tr[data-cid=\"{cid}\"]')"),
    ));
    runtime.block_on(browser.wait_until(
        "the empty-list note",
        "!document.getElementById('no-signers').hidden",
    ));
    drop(browser);
}

#[test]
fn prometheus_scrapes_signers_requests_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path());
    // LSS behind a proxy that can alter a reply on its way to the broker.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = runtime.block_on(lk_testkit::net::FaultProxy::start(lss.addr));
    let (mut broker, home, mut signer) = ready(
        dir.path(),
        &format!("http://{}", proxy.addr),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let log = {
        broker.proc.wait_log("metrics on http://");
        broker.proc.log_text()
    };
    let prometheus = Prometheus::scraping(&[metrics_addr(&log)]);
    let q = |promql: &str, want: f64| {
        prometheus.wait_for(promql, |v| v == want);
    };
    q(r#"sphinx_broker_signers{state="ready"}"#, 1.0);
    q(
        r#"sphinx_broker_requests_total{type="init",outcome="ok"}"#,
        1.0,
    );
    for other in 3..6 {
        ecdh(&mut broker.master, &home, other);
    }
    let ecdh_type = msgs::Ecdh::TYPE;
    q(
        &format!(r#"sphinx_broker_requests_total{{type="{ecdh_type}",outcome="ok"}}"#),
        3.0,
    );
    q(
        &format!(r#"sphinx_broker_request_duration_seconds_count{{type="{ecdh_type}"}}"#),
        3.0,
    );
    provoke_signer_error(&mut broker);
    q(r#"sphinx_broker_signer_errors_total{kind="other"}"#, 1.0);
    q(
        &format!(
            r#"sphinx_broker_requests_total{{type="{}",outcome="signer"}}"#,
            msgs::CheckFutureSecret::TYPE
        ),
        1.0,
    );

    // A put acknowledgement altered in transit: the signer refuses it and
    // reports a MAC failure, counted apart. (A successful PutReply: gRPC
    // prefix, success = true, then the 32-byte MAC, whose first byte flips.)
    proxy.tamper_next(&[0, 0, 0, 0, 0x24, 0x08, 0x01, 0x12, 0x20]);
    let mut client = broker.master.client_with(peer(), 0, driver::MASTER);
    client.send(&msgs::NewChannel {
        peer_id: PubKey(peer()),
        dbid: 9,
    });
    assert!(client.recv().is_none(), "the reply is withheld");
    q(r#"sphinx_broker_signer_errors_total{kind="mac"}"#, 1.0);

    // Another node's signer is refused by the owner policy, and counted.
    let intruder = SignerHome::create(&dir.path().join("intruder"));
    let mut refused = intruder.start_lss(&broker.url(), &[]);
    // (The refused signer keeps retrying: at least one.)
    prometheus.wait_for(
        r#"sphinx_broker_mqtt_logins_refused_total{reason="policy"}"#,
        |v| v >= 1.0,
    );
    refused.kill();

    // LSS goes away: a reconnecting signer's restore is retried, and counted.
    drop(lss);
    signer.kill();
    let _again = home.start_lss(&broker.url(), &[]);
    prometheus.wait_for(r#"sum(sphinx_broker_lss_retries_total)"#, |v| v >= 1.0);
    q(r#"sphinx_broker_signers{state="ready"}"#, 0.0);
}
