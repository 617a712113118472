//! Issue 13, item 1: `deploy/nginx.conf` as shipped (addresses substituted) in front of the real
//! binary and a stand-in coderd. Routing, the client address logged and rate-limited through
//! the proxy, instauth's 503 reaching the client intact, and nginx's own 502 when instauth is
//! down. Needs Debian's nginx (`nginx-light`, installed by `.ci/run`).

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::app::AWS_PATH;
use crate::helpers::child::free_address;
use crate::helpers::http_stub::HttpStub;
use crate::helpers::pg::{TableLock, TestDatabase};
use crate::helpers::{scratch_dir, signing};
use crate::process::{logged, served_quietly};

/// nginx running `deploy/nginx.conf` in the foreground; killed when dropped.
struct Nginx {
    child: Child,
    address: String,
}

impl Nginx {
    fn start(instauth: &str, coderd: &str) -> Self {
        let listen = free_address();
        let server = include_str!("../../deploy/nginx.conf")
            .replace("server 127.0.0.1:3000;", &format!("server {instauth};"))
            .replace("server 127.0.0.1:3001;", &format!("server {coderd};"))
            .replace("listen 80;", &format!("listen {listen};"));
        assert!(
            server.contains(instauth) && server.contains(coderd) && server.contains(&listen),
            "the shipped file no longer has the addresses this test substitutes"
        );
        let dir = scratch_dir("nginx");
        std::fs::write(dir.join("server.conf"), server).expect("server block");
        let main = format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n  \
             access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
             include {dir}/server.conf;\n}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("main config");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("/usr/sbin/nginx runs (apt-get install nginx-light)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx never listened on {listen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            address: format!("http://{listen}"),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client whose connections come from `source`.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .build()
        .expect("client")
}

async fn aws(client: &reqwest::Client, address: &str, instance: &str) -> reqwest::Response {
    let (signature, document) = signing::aws_document(instance);
    client
        .post(format!("{address}{AWS_PATH}"))
        .json(&json!({"signature": signature, "document": document}))
        .send()
        .await
        .expect("request through nginx")
}

#[tokio::test]
async fn deploy_nginx_routes_forwards_the_client_and_passes_answers_through() {
    let database = TestDatabase::create().await;
    let served = served_quietly(
        &database.url,
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--rate-limit-per-minute",
            "2",
            "--db-statement-timeout",
            "300ms",
        ],
    );
    let instauth = served.address.trim_start_matches("http://").to_owned();
    let coderd = HttpStub::start(
        "200 OK",
        &[("content-type", "text/plain")],
        b"coderd".to_vec(),
    )
    .await;
    let coderd_address = coderd
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let nginx = Nginx::start(&instauth, &coderd_address);

    // Everything but the three routes is coderd's.
    let other = client_from([127, 0, 0, 2])
        .get(format!("{}/api/v2/buildinfo", nginx.address))
        .send()
        .await
        .expect("coderd route");
    assert_eq!(other.status(), 200);
    assert_eq!(other.text().await.expect("body"), "coderd");
    assert_eq!(coderd.hits(), 1);

    // Two real clients, two buckets: 127.0.0.2's third request is refused, 127.0.0.3's first
    // is not.
    let two = client_from([127, 0, 0, 2]);
    let three = client_from([127, 0, 0, 3]);
    for _ in 0..2 {
        let response = aws(&two, &nginx.address, "i-nginx").await;
        assert_eq!(response.status(), 404);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["message"], "Instance with id \"i-nginx\" not found.");
    }
    let limited = aws(&two, &nginx.address, "i-nginx").await;
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers().get("retry-after").is_some(),
        "{limited:?}"
    );
    let body: serde_json::Value = limited.json().await.expect("json");
    assert_eq!(body["message"], "Rate limit exceeded.");

    // instauth's 503 reaches the client with its Retry-After and JSON body: the lookup waits
    // on a locked table until the statement timeout.
    let lock = TableLock::take(&database.options).await;
    let unavailable = aws(&three, &nginx.address, "i-nginx").await;
    lock.release().await;
    assert_eq!(unavailable.status(), 503);
    assert_eq!(
        unavailable
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        unavailable
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    let body: serde_json::Value = unavailable.json().await.expect("json");
    assert_eq!(body["message"], "Internal error fetching workspace agent.");
    assert_eq!(
        coderd.hits(),
        1,
        "no instance-identity request reached coderd"
    );

    served.running.sigterm();
    let (_, lines) = served.running.finish();
    let addresses: Vec<(String, String)> = logged(&lines, "authentication")
        .iter()
        .map(|line| {
            let field = |name: &str| line[name].as_str().unwrap_or_default().to_owned();
            (field("client.address"), field("network.peer.address"))
        })
        .collect();
    let expected: Vec<(String, String)> = ["127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|client| ((*client).to_owned(), "127.0.0.1".to_owned()))
        .collect();
    assert_eq!(addresses, expected, "{lines:#?}");

    // instauth is down: nginx answers 502 itself, with no JSON (the agent retries it like any
    // error).
    let bad_gateway = aws(&three, &nginx.address, "i-nginx").await;
    assert_eq!(bad_gateway.status(), 502);
    let text = bad_gateway.text().await.expect("body");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "nginx's 502 is not JSON: {text}"
    );
}
