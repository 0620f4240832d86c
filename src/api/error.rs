//! The API's error format (design.md Part 2): `{"errors": [{"code", "title",
//! "detail", "source": {"pointer": "/a/b"}}]}`; query parameters are named
//! by `source.parameter` (JSON:API). Status codes are chosen here only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorObject {
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// A rejected request: a status and one or more error objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<ErrorObject>,
}

impl ApiError {
    fn one(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            errors: vec![ErrorObject {
                code,
                title: status.canonical_reason().unwrap_or("Error"),
                detail: detail.into(),
                source: None,
            }],
        }
    }

    fn with_pointer(mut self, pointer: String) -> ApiError {
        self.errors[0].source = Some(Source {
            pointer: Some(pointer),
            parameter: None,
        });
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::one(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::one(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::one(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn file_owned(id: &str) -> ApiError {
        ApiError::one(
            StatusCode::CONFLICT,
            "file_owned",
            format!("connection {id:?} is defined in the config file; change it there and reload"),
        )
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::one(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    pub fn malformed_json(detail: impl Into<String>) -> ApiError {
        ApiError::one(StatusCode::BAD_REQUEST, "malformed_json", detail)
    }

    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> ApiError {
        let mut e = ApiError::one(StatusCode::BAD_REQUEST, "invalid_parameter", detail);
        e.errors[0].source = Some(Source {
            pointer: None,
            parameter: Some(parameter.to_owned()),
        });
        e
    }

    /// 422 for a query parameter that is well-formed but unusable (the v1
    /// API's answer to an improper filter).
    pub fn unprocessable_parameter(parameter: &str, detail: impl Into<String>) -> ApiError {
        let mut e = ApiError::bad_parameter(parameter, detail);
        e.status = StatusCode::UNPROCESSABLE_ENTITY;
        e
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::one(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::one(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        )
    }

    /// 422 at a JSON pointer into the request body.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::one(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", detail)
            .with_pointer(pointer.into())
    }

    /// Several 422 errors at once.
    pub fn invalid_all(issues: Vec<(String, String)>) -> ApiError {
        let errors = issues
            .into_iter()
            .flat_map(|(p, d)| ApiError::invalid(p, d).errors)
            .collect();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        }
    }

    /// 422: the caller's `user_id` owns `limit` connections already
    /// (`limits.connections_per_user`).
    pub fn connection_limit(user_id: &str, limit: usize) -> ApiError {
        ApiError::one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "connection_limit_reached",
            format!(
                "user_id {user_id:?} already has {limit} connections, the most limits.connections_per_user allows"
            ),
        )
        .with_pointer("/user_id".into())
    }

    pub fn internal() -> ApiError {
        ApiError::one(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the daemon's log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::DuplicateUserName(u) => {
                let mut e = ApiError::one(
                    StatusCode::CONFLICT,
                    "user_name_taken",
                    format!("user_name {u:?} is already used by another connection"),
                );
                e.errors[0].source = Some(Source {
                    pointer: Some("/user_name".into()),
                    parameter: None,
                });
                e
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": self.errors });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
