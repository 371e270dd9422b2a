//! The JSON the simulator answers with, in Stripe's shapes, so a client written against it also
//! reads a real Stripe-compatible processor.

use serde_json::{Value, json};

use crate::domain::InvalidRequest;

/// An answer before it becomes an HTTP response: what idempotency stores and replays.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// True when this is a stored answer to an earlier request with the same key.
    pub replayed: bool,
}

impl Answer {
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            replayed: false,
        }
    }
}

/// Stripe's error object: `{"error": {"type", "code"?, "decline_code"?, "param"?, "message"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub decline_code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            decline_code: None,
            param: None,
            message: message.into(),
        }
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    pub fn idempotency(message: impl Into<String>) -> Self {
        Self::new(400, "idempotency_error", message)
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            format!("No such {kind}: '{id}'"),
        )
        .code("resource_missing")
    }

    pub fn into_answer(self) -> Answer {
        let mut error = json!({ "type": self.kind, "message": self.message });
        for (field, value) in [
            ("code", self.code),
            ("decline_code", self.decline_code),
            ("param", self.param),
        ] {
            if let Some(value) = value {
                error[field] = Value::from(value);
            }
        }
        Answer {
            status: self.status,
            body: json!({ "error": error }),
            replayed: false,
        }
    }
}

impl From<InvalidRequest> for ApiFailure {
    fn from(invalid: InvalidRequest) -> Self {
        Self {
            code: Some(invalid.code),
            param: invalid.param,
            ..Self::invalid_request(invalid.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_error_fields_are_left_out() {
        let answer = ApiFailure::invalid_request("bad").into_answer();
        assert_eq!(answer.status, 400);
        assert_eq!(
            answer.body,
            json!({"error": {"type": "invalid_request_error", "message": "bad"}})
        );
    }

    #[test]
    fn invalid_requests_name_their_parameter() {
        let failure = ApiFailure::from(InvalidRequest {
            code: "parameter_missing",
            param: Some("amount"),
            message: "Missing required param: amount.".into(),
        });
        let body = failure.into_answer().body;
        assert_eq!(body["error"]["param"], "amount");
        assert_eq!(body["error"]["code"], "parameter_missing");
    }
}
