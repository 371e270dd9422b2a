//! The order's event stream: status changes are pushed to every open stream, whichever
//! instance of the order service serves it, and a reconnect with `Last-Event-ID` resumes
//! without a gap or a repeat.

use std::time::Duration;

use bazaar_integration_tests::stack::{Customer, Stack, StackOptions};
use serde_json::Value;

/// One open event stream and what it has received so far.
struct OpenStream {
    response: reqwest::Response,
    text: String,
}

impl OpenStream {
    async fn open(
        http: &reqwest::Client,
        url: String,
        customer: &Customer,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut request = http.get(url).bearer_auth(&customer.token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            text: String::new(),
        }
    }

    /// Reads until `status` has arrived, or the stream ended.
    async fn read_until(&mut self, status: &str) {
        let wanted = format!("\"status\":\"{status}\"");
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while !self.text.contains(&wanted) {
                match self.response.chunk().await.expect("chunk") {
                    Some(chunk) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                    None => break,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no {status} within 30 s: {}", self.text);
        assert!(
            self.text.contains(&wanted),
            "the stream ended before {status}: {}",
            self.text
        );
    }

    /// Reads to the end: the stream closes after a final status.
    async fn read_to_end(&mut self) {
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(chunk) = self
                .response
                .chunk()
                .await
                .unwrap_or_else(|error| panic!("{error}: {}", self.text))
            {
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the stream did not end within 30 s: {}",
            self.text
        );
    }

    /// (event id, status) of every event received, in order.
    fn events(&self) -> Vec<(i64, String)> {
        self.text
            .split("\n\n")
            .filter_map(|frame| {
                let id = frame
                    .lines()
                    .find_map(|line| line.strip_prefix("id: "))?
                    .parse()
                    .ok()?;
                let data: Value = serde_json::from_str(
                    frame.lines().find_map(|line| line.strip_prefix("data: "))?,
                )
                .ok()?;
                Some((id, data["status"].as_str()?.to_owned()))
            })
            .collect()
    }
}

fn statuses(events: &[(i64, String)]) -> Vec<&str> {
    events.iter().map(|(_, status)| status.as_str()).collect()
}

#[tokio::test]
async fn a_change_made_through_one_instance_reaches_streams_on_every_instance_and_a_reconnect_resumes()
 {
    let mut stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack.seed_demo().await.expect("seed");
    let second = stack
        .start_order_instance()
        .await
        .expect("second order instance");
    // Without the payment service the order stays pending, reserved, until its customer cancels.
    stack.payment.halt().await.expect("halt payment");
    let customer = stack.customer();
    let order_id = stack
        .checkout(&customer, &[("TEE-BLK-M", 1)], "tok_visa")
        .await
        .expect("checkout");

    let path = format!("/orders/{order_id}/events");
    let mut through_gateway = OpenStream::open(
        &stack.http,
        stack.url(&format!("/api{path}")),
        &customer,
        None,
    )
    .await;
    let mut on_first = OpenStream::open(
        &stack.http,
        format!("{}{path}", stack.order.base_url),
        &customer,
        None,
    )
    .await;
    let mut on_second = OpenStream::open(
        &stack.http,
        format!("{}{path}", second.base_url),
        &customer,
        None,
    )
    .await;
    for stream in [&mut through_gateway, &mut on_first, &mut on_second] {
        stream.read_until("pending").await;
    }

    // The cancel commits through the first instance only; the others hear it from PostgreSQL.
    let cancel = stack
        .http
        .post(format!("{}/orders/{order_id}/cancel", stack.order.base_url))
        .bearer_auth(&customer.token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), 200);
    for stream in [&mut through_gateway, &mut on_first, &mut on_second] {
        stream.read_to_end().await;
        assert_eq!(
            statuses(&stream.events()),
            vec!["pending", "cancelled"],
            "{}",
            stream.text
        );
    }
    let seen = on_second.events();
    assert_eq!(
        seen,
        through_gateway.events(),
        "every stream saw the same ids"
    );

    // A client that saw only `pending` reconnects: it gets what came after, once.
    let mut resumed = OpenStream::open(
        &stack.http,
        stack.url(&format!("/api{path}")),
        &customer,
        Some(seen[0].0),
    )
    .await;
    resumed.read_to_end().await;
    assert_eq!(resumed.events(), seen[1..].to_vec(), "{}", resumed.text);
    // One that saw everything gets nothing more, and the stream ends.
    let mut caught_up = OpenStream::open(
        &stack.http,
        stack.url(&format!("/api{path}")),
        &customer,
        Some(seen[1].0),
    )
    .await;
    caught_up.read_to_end().await;
    assert!(caught_up.events().is_empty(), "{}", caught_up.text);

    second.stop().await.expect("second instance stops");
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_last_event_id_that_is_not_an_event_id_is_refused() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack.seed_demo().await.expect("seed");
    let customer = stack.customer();
    let order_id = stack
        .checkout(&customer, &[("TEE-BLK-M", 1)], "tok_visa")
        .await
        .expect("checkout");
    let answer = stack
        .http
        .get(stack.url(&format!("/api/orders/{order_id}/events")))
        .bearer_auth(&customer.token)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .expect("stream");
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_last_event_id", "{body}");
    stack.stop().await.expect("clean stop");
}
