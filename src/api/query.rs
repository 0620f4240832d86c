//! Query strings: the list's `page[number]`, `page[size]`,
//! `filter[connection_name][contains]` and `sort`, the same list's v1
//! parameters (`page`, `per_page`, `filter_connection_name`,
//! `filter_auth_user_name`, `filter_ip_address`, `order_by`,
//! `sort_direction`, `with_ips`, `with_auth`, `with_fqdns`, `mode`), and
//! the product's `credential_type`, `connection_id`, `user_id`. Unknown or
//! repeated parameters, and v1 and v2 forms of the same thing mixed, are a
//! 400 naming the parameter.

use std::collections::HashMap;

use super::error::ApiError;
use crate::store::{Sort, SortKey};

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 250;
/// v1: `per_page` defaults to 100, at most 1000.
pub const V1_DEFAULT_PAGE_SIZE: u32 = 100;
pub const V1_MAX_PAGE_SIZE: u32 = 1000;
/// v1 filters need at least this many characters.
pub const V1_MIN_FILTER: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub page_number: u32,
    pub page_size: u32,
    pub name_contains: Option<String>,
    /// v1 `filter_auth_user_name`.
    pub user_name_contains: Option<String>,
    /// v1 `filter_ip_address`: only IP-authenticated connections, and a UAC
    /// connection is credential-based: nothing matches.
    pub none: bool,
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

/// v1 `order_by` (default `created_at`) and `sort_direction=reverse`:
/// `created_at` newest first, `connection_name` A-Z, `active` enabled
/// first; `auth_type` orders credential-based connections first, and every
/// UAC connection is one, so it orders as `created_at` does.
fn parse_v1_order(order_by: Option<&str>, direction: Option<&str>) -> Result<Sort, ApiError> {
    let (key, descending) = match order_by.unwrap_or("created_at") {
        "created_at" | "auth_type" => (SortKey::CreatedAt, true),
        "connection_name" => (SortKey::ConnectionName, false),
        "active" => (SortKey::Active, true),
        _ => {
            return Err(ApiError::bad_parameter(
                "order_by",
                "must be one of created_at, connection_name, auth_type, active",
            ));
        }
    };
    let reverse = match direction {
        None => false,
        Some("reverse") => true,
        Some(_) => return Err(ApiError::bad_parameter("sort_direction", "must be reverse")),
    };
    Ok(Sort {
        key,
        descending: descending != reverse,
    })
}

/// A v1 filter: at least [`V1_MIN_FILTER`] characters (422 otherwise, as
/// the v1 API answers an improper filter).
fn v1_filter(q: &HashMap<String, String>, key: &str) -> Result<Option<String>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) if v.chars().count() >= V1_MIN_FILTER => Ok(Some(v.clone())),
        Some(_) => Err(ApiError::unprocessable_parameter(
            key,
            format!("needs at least {V1_MIN_FILTER} characters"),
        )),
    }
}

pub fn parse_list(raw: Option<&str>) -> Result<ListParams, ApiError> {
    const PAGE_NUMBER: &str = "page[number]";
    const PAGE_SIZE: &str = "page[size]";
    const CONTAINS: &str = "filter[connection_name][contains]";
    const V1: [&str; 11] = [
        "page",
        "per_page",
        "filter_connection_name",
        "filter_auth_user_name",
        "filter_ip_address",
        "order_by",
        "sort_direction",
        "with_ips",
        "with_auth",
        "with_fqdns",
        "mode",
    ];
    let mut allowed = vec![PAGE_NUMBER, PAGE_SIZE, CONTAINS, "sort"];
    allowed.extend(V1);
    let q = pairs(raw, &allowed)?;
    // One form per concern: the second one named is the offending one.
    for (v2, v1) in [
        (PAGE_NUMBER, "page"),
        (PAGE_SIZE, "per_page"),
        (PAGE_NUMBER, "per_page"),
        (PAGE_SIZE, "page"),
        (CONTAINS, "filter_connection_name"),
        ("sort", "order_by"),
        ("sort", "sort_direction"),
    ] {
        if q.contains_key(v2) && q.contains_key(v1) {
            return Err(ApiError::bad_parameter(
                v1,
                format!("cannot be combined with {v2} (v1 and v2 list parameters mixed)"),
            ));
        }
    }
    for key in ["with_ips", "with_auth", "with_fqdns"] {
        if q.get(key).is_some_and(|v| v != "true" && v != "false") {
            return Err(ApiError::bad_parameter(key, "must be true or false"));
        }
    }
    if q.get("mode").is_some_and(|m| m != "typeahead") {
        return Err(ApiError::bad_parameter("mode", "must be typeahead"));
    }
    // The v1 paging parameters, when given, else the v2 ones: a v2 one is
    // never ignored (checked against its range) because a v1 flag such as
    // `mode` or `with_auth` came with it. The page size defaults to v1's
    // when any v1 parameter is present.
    let v1 = V1.iter().any(|k| q.contains_key(*k));
    let page_number = if q.contains_key("page") {
        int_in(&q, "page", 1..=u32::MAX, 1)?
    } else {
        int_in(&q, PAGE_NUMBER, 1..=u32::MAX, 1)?
    };
    let page_size = if q.contains_key("per_page") || (v1 && !q.contains_key(PAGE_SIZE)) {
        int_in(&q, "per_page", 1..=V1_MAX_PAGE_SIZE, V1_DEFAULT_PAGE_SIZE)?
    } else {
        int_in(&q, PAGE_SIZE, 1..=MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?
    };
    let sort = if q.contains_key("order_by") || q.contains_key("sort_direction") {
        parse_v1_order(
            q.get("order_by").map(String::as_str),
            q.get("sort_direction").map(String::as_str),
        )?
    } else {
        parse_sort(q.get("sort").map(String::as_str))?
    };
    Ok(ListParams {
        page_number,
        page_size,
        name_contains: match v1_filter(&q, "filter_connection_name")? {
            Some(f) => Some(f),
            None => q.get(CONTAINS).filter(|s| !s.is_empty()).cloned(),
        },
        user_name_contains: v1_filter(&q, "filter_auth_user_name")?,
        none: q.contains_key("filter_ip_address"),
        sort,
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
    fn v2_paging_is_honoured_beside_v1_flags() {
        let p = parse_list(Some("with_auth=true&page[number]=2")).unwrap();
        assert_eq!((p.page_number, p.page_size), (2, V1_DEFAULT_PAGE_SIZE));
        let p = parse_list(Some("mode=typeahead&page[number]=3&page[size]=7")).unwrap();
        assert_eq!((p.page_number, p.page_size), (3, 7));
        let p = parse_list(Some("page=4&per_page=5")).unwrap();
        assert_eq!((p.page_number, p.page_size), (4, 5));
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
            // A v1 flag does not make a v2 paging parameter go unchecked
            // (found by schemathesis).
            (
                "mode=typeahead&page[number]=746978719105833",
                "page[number]",
            ),
            ("with_auth=true&page[size]=251", "page[size]"),
        ] {
            let e = parse_list(Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(param_of(&e), Some(param), "{q}");
        }
    }

    #[test]
    fn v1_list_parameters_with_their_meaning_and_limits() {
        let p = parse_list(Some("page=2&per_page=1000&filter_connection_name=ofF&order_by=connection_name&sort_direction=reverse&with_ips=true&mode=typeahead")).unwrap();
        assert_eq!((p.page_number, p.page_size), (2, 1000));
        assert_eq!(p.name_contains.as_deref(), Some("ofF"));
        assert_eq!(
            p.sort,
            Sort {
                key: SortKey::ConnectionName,
                descending: true
            },
            "A-Z reversed"
        );
        let p = parse_list(Some("filter_auth_user_name=uacd")).unwrap();
        assert_eq!(p.page_size, V1_DEFAULT_PAGE_SIZE);
        assert_eq!(p.user_name_contains.as_deref(), Some("uacd"));
        assert!(!p.none);
        assert!(
            parse_list(Some("filter_ip_address=192.0.2.1"))
                .unwrap()
                .none
        );
        for (q, key, descending) in [
            ("order_by=created_at", SortKey::CreatedAt, true),
            ("order_by=auth_type", SortKey::CreatedAt, true),
            ("order_by=active", SortKey::Active, true),
            (
                "order_by=active&sort_direction=reverse",
                SortKey::Active,
                false,
            ),
            ("sort_direction=reverse", SortKey::CreatedAt, false),
        ] {
            assert_eq!(
                parse_list(Some(q)).unwrap().sort,
                Sort { key, descending },
                "{q}"
            );
        }
        for (q, param, status) in [
            ("filter_connection_name=ab", "filter_connection_name", 422),
            ("filter_auth_user_name=u", "filter_auth_user_name", 422),
            ("per_page=1001", "per_page", 400),
            ("page=0", "page", 400),
            ("page=2&page[size]=10", "page", 400),
            ("page[number]=2&per_page=10", "per_page", 400),
            (
                "filter[connection_name][contains]=abc&filter_connection_name=abc",
                "filter_connection_name",
                400,
            ),
            ("sort=created_at&order_by=active", "order_by", 400),
            ("order_by=name", "order_by", 400),
            ("sort_direction=up", "sort_direction", 400),
            ("with_auth=yes", "with_auth", 400),
            ("mode=full", "mode", 400),
        ] {
            let e = parse_list(Some(q)).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{q}");
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
