//! Lists (SPEC §4): `?page=1&pageSize=20` in, `{"items", "total", "page", "pageSize"}` out.
//!
//! Handlers take a `Query<PageQuery>`, turn it into a [`PageRequest`] with [`PageQuery::validate`]
//! (the only place the bounds are checked; its problems become a 400 with `ApiError::validation`),
//! and answer a [`Page`].

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_PAGE: u32 = 1;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Larger pages would let one request scan a tenant's whole history.
pub const MAX_PAGE_SIZE: u32 = 100;

/// The pagination query parameters, as sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct PageQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1, default = 1)]
    pub page: Option<u32>,
    /// Items per page (default 20, at most 100).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub page_size: Option<u32>,
}

/// A page within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageQuery {
    /// Applies the defaults and checks the bounds; every violation is listed, for one 400.
    pub fn validate(&self) -> Result<PageRequest, Vec<String>> {
        let page = self.page.unwrap_or(DEFAULT_PAGE);
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        let mut problems = Vec::new();
        if page < 1 {
            problems.push("page must not be less than 1".to_owned());
        }
        if page_size < 1 {
            problems.push("pageSize must not be less than 1".to_owned());
        }
        if page_size > MAX_PAGE_SIZE {
            problems.push(format!("pageSize must not be greater than {MAX_PAGE_SIZE}"));
        }
        if problems.is_empty() {
            Ok(PageRequest { page, page_size })
        } else {
            Err(problems)
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: DEFAULT_PAGE,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl PageRequest {
    /// `(LIMIT, OFFSET)` for SQL; both fit an `i64` whatever the `u32` inputs.
    pub fn limit_offset(&self) -> (i64, i64) {
        let limit = i64::from(self.page_size);
        let offset = i64::from(self.page.saturating_sub(1)) * limit;
        (limit, offset)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match, over all pages.
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, request: PageRequest) -> Self {
        Self {
            items,
            total,
            page: request.page,
            page_size: request.page_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;

    fn query(page: Option<u32>, page_size: Option<u32>) -> PageQuery {
        PageQuery { page, page_size }
    }

    #[test]
    fn missing_parameters_mean_the_first_page_of_twenty() {
        let request = query(None, None).validate().unwrap();
        assert_eq!(
            request,
            PageRequest {
                page: 1,
                page_size: 20
            }
        );
        assert_eq!(request.limit_offset(), (20, 0));
    }

    #[test]
    fn the_offset_skips_the_previous_pages() {
        let request = query(Some(3), Some(25)).validate().unwrap();
        assert_eq!(request.limit_offset(), (25, 50));
        let last = query(Some(u32::MAX), Some(100)).validate().unwrap();
        assert_eq!(last.limit_offset(), (100, (i64::from(u32::MAX) - 1) * 100));
    }

    #[test]
    fn a_page_size_over_one_hundred_is_a_validation_error() {
        let error = ApiError::validation(query(None, Some(101)).validate().unwrap_err());
        assert_eq!(error.status(), 400);
        let body = serde_json::to_value(error.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "statusCode": 400,
                "message": ["pageSize must not be greater than 100"],
                "error": "Bad Request"
            })
        );
        assert!(query(None, Some(100)).validate().is_ok());
    }

    #[test]
    fn zero_page_and_zero_page_size_are_both_listed() {
        assert_eq!(
            query(Some(0), Some(0)).validate(),
            Err(vec![
                "page must not be less than 1".to_owned(),
                "pageSize must not be less than 1".to_owned(),
            ])
        );
    }

    #[test]
    fn a_page_serializes_in_camel_case() {
        let page = Page::new(
            vec![1, 2],
            7,
            PageRequest {
                page: 2,
                page_size: 2,
            },
        );
        assert_eq!(
            serde_json::to_value(page).unwrap(),
            serde_json::json!({"items": [1, 2], "total": 7, "page": 2, "pageSize": 2})
        );
    }
}
