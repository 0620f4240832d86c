//! Query strings: the list's `page[number]`, `page[size]`,
//! `filter[connection_name][contains]` and `sort`, and the product's
//! `credential_type`, `connection_id`, `user_id`. Unknown or repeated
//! parameters are a 400 naming the parameter.

use std::collections::HashMap;

use super::error::ApiError;
use crate::store::{Sort, SortKey};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 250;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub page_number: u32,
    pub page_size: u32,
    pub name_contains: Option<String>,
    pub sort: Sort,
}

/// Splits a query string into unique keys; `allowed` names every accepted key.
fn pairs(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::bad_parameter(&k, "unknown query parameter"));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::bad_parameter(&k, "given more than once"));
        }
    }
    Ok(out)
}

fn int_in(
    q: &HashMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, ApiError> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    key,
                    format!(
                        "must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// `created_at`, `-created_at`, `updated_at`, `connection_name` (each with an
/// optional `-` for descending). Absent: newest first, as the product documents.
pub fn parse_sort(v: Option<&str>) -> Result<Sort, ApiError> {
    let Some(v) = v else {
        return Ok(Sort {
            key: SortKey::CreatedAt,
            descending: true,
        });
    };
    let (descending, name) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let key = match name {
        "created_at" => SortKey::CreatedAt,
        "updated_at" => SortKey::UpdatedAt,
        "connection_name" => SortKey::ConnectionName,
        _ => {
            return Err(ApiError::bad_parameter(
                "sort",
                "must be one of created_at, updated_at, connection_name, optionally prefixed with -",
            ));
        }
    };
    Ok(Sort { key, descending })
}

pub fn parse_list(raw: Option<&str>) -> Result<ListParams, ApiError> {
    const PAGE_NUMBER: &str = "page[number]";
    const PAGE_SIZE: &str = "page[size]";
    const CONTAINS: &str = "filter[connection_name][contains]";
    let q = pairs(raw, &[PAGE_NUMBER, PAGE_SIZE, CONTAINS, "sort"])?;
    Ok(ListParams {
        page_number: int_in(&q, PAGE_NUMBER, 1..=u32::MAX, 1)?,
        page_size: int_in(&q, PAGE_SIZE, 1..=MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?,
        name_contains: q.get(CONTAINS).filter(|s| !s.is_empty()).cloned(),
        sort: parse_sort(q.get("sort").map(String::as_str))?,
    })
}

/// The product's `credential_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialType {
    UacThirdParty,
    Telephony,
    SipCredentialConnection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusParams {
    pub credential_type: CredentialType,
    pub connection_id: String,
    pub user_id: String,
}

pub fn parse_status(raw: Option<&str>) -> Result<StatusParams, ApiError> {
    let q = pairs(raw, &["credential_type", "connection_id", "user_id"])?;
    let required = |key: &str| -> Result<String, ApiError> {
        match q.get(key) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            Some(_) => Err(ApiError::bad_parameter(key, "must not be empty")),
            None => Err(ApiError::bad_parameter(key, "is required")),
        }
    };
    let credential_type = match required("credential_type")?.as_str() {
        "uac_third-party_credential" => CredentialType::UacThirdParty,
        "telephony_credential" => CredentialType::Telephony,
        "sip_credential_connection" => CredentialType::SipCredentialConnection,
        _ => {
            return Err(ApiError::bad_parameter(
                "credential_type",
                "must be one of uac_third-party_credential, telephony_credential, sip_credential_connection",
            ));
        }
    };
    Ok(StatusParams {
        credential_type,
        connection_id: required("connection_id")?,
        user_id: required("user_id")?,
    })
}

/// `ceil(total / size)`.
pub fn total_pages(total: u64, size: u32) -> u64 {
    total.div_ceil(u64::from(size.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn param_of(e: &ApiError) -> Option<&str> {
        e.errors[0].source.as_ref()?.parameter.as_deref()
    }

    #[test]
    fn list_defaults() {
        let p = parse_list(None).unwrap();
        assert_eq!(p.page_number, 1);
        assert_eq!(p.page_size, 20);
        assert_eq!(p.name_contains, None);
        assert_eq!(
            p.sort,
            Sort {
                key: SortKey::CreatedAt,
                descending: true
            }
        );
    }

    #[test]
    fn list_reads_bracketed_and_encoded_keys() {
        let p = parse_list(Some(
            "page%5Bnumber%5D=3&page[size]=250&filter[connection_name][contains]=Office%20PBX&sort=-connection_name",
        ))
        .unwrap();
        assert_eq!((p.page_number, p.page_size), (3, 250));
        assert_eq!(p.name_contains.as_deref(), Some("Office PBX"));
        assert_eq!(
            p.sort,
            Sort {
                key: SortKey::ConnectionName,
                descending: true
            }
        );
    }

    #[test]
    fn list_rejects_bad_values_with_the_parameter_named() {
        for (q, param) in [
            ("page[size]=0", "page[size]"),
            ("page[size]=251", "page[size]"),
            ("page[size]=x", "page[size]"),
            ("page[number]=0", "page[number]"),
            ("page[number]=-1", "page[number]"),
            ("sort=name", "sort"),
            ("sort=--created_at", "sort"),
            ("bogus=1", "bogus"),
            ("sort=created_at&sort=connection_name", "sort"),
        ] {
            let e = parse_list(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(param_of(&e), Some(param), "{q}");
        }
    }

    #[test]
    fn status_params() {
        let ok = parse_status(Some(
            "credential_type=uac_third-party_credential&connection_id=42&user_id=323",
        ))
        .unwrap();
        assert_eq!(ok.credential_type, CredentialType::UacThirdParty);
        assert_eq!(
            (ok.connection_id.as_str(), ok.user_id.as_str()),
            ("42", "323")
        );
        for (q, param) in [
            ("connection_id=42&user_id=323", "credential_type"),
            (
                "credential_type=nope&connection_id=42&user_id=323",
                "credential_type",
            ),
            (
                "credential_type=uac_third-party_credential&user_id=323",
                "connection_id",
            ),
            (
                "credential_type=uac_third-party_credential&connection_id=42",
                "user_id",
            ),
            (
                "credential_type=uac_third-party_credential&connection_id=&user_id=1",
                "connection_id",
            ),
        ] {
            let e = parse_status(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(param_of(&e), Some(param), "{q}");
        }
    }

    #[test]
    fn pages() {
        assert_eq!(total_pages(0, 20), 0);
        assert_eq!(total_pages(1, 20), 1);
        assert_eq!(total_pages(40, 20), 2);
        assert_eq!(total_pages(41, 20), 3);
    }
}
