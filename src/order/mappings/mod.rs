//! Product mappings (SPEC §6.2): which print files a SKU is made of. A line item whose SKU has no
//! active mapping waits as UNMAPPED until one is added and the order is retried.

mod repository;
pub mod routes;
#[cfg(test)]
mod routes_tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use repository::{active_for_skus, find};

/// One file a product is printed from. `unitsPerPrint` is how many units one print yields: 8 units
/// of a file with `quantity` 1 and `unitsPerPrint` 4 take 2 prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrintFile {
    /// SimplyPrint's file id.
    pub file_id: String,
    pub file_name: String,
    /// Copies of this file per unit of the product (default 1).
    pub quantity: u32,
    /// Units of the product one print of this file yields (default 1).
    pub units_per_print: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print_profile: Option<String>,
}

impl PrintFile {
    /// Prints of this file that `units` units of the product take: ceil(units × quantity ÷
    /// unitsPerPrint). Widened so no quantity overflows.
    pub fn prints_for(&self, units: u32) -> u64 {
        let copies = u64::from(units) * u64::from(self.quantity);
        copies.div_ceil(u64::from(self.units_per_print.max(1)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductMapping {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub sku: String,
    pub product_name: String,
    pub shopify_product_id: Option<String>,
    pub shopify_variant_id: Option<String>,
    pub print_files: Vec<PrintFile>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A print file as a client sends it: counts default to 1.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrintFileInput {
    #[serde(default)]
    pub file_id: String,
    #[serde(default)]
    pub file_name: String,
    pub quantity: Option<i64>,
    pub units_per_print: Option<i64>,
    pub print_profile: Option<String>,
}

/// The body of a create (every required field) or an update (only what changes).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MappingInput {
    pub sku: Option<String>,
    pub product_name: Option<String>,
    pub shopify_product_id: Option<String>,
    pub shopify_variant_id: Option<String>,
    pub print_files: Option<Vec<PrintFileInput>>,
    pub is_active: Option<bool>,
}

/// What a mapping is stored as, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingFields {
    pub sku: String,
    pub product_name: String,
    pub shopify_product_id: Option<String>,
    pub shopify_variant_id: Option<String>,
    pub print_files: Vec<PrintFile>,
    pub is_active: bool,
}

const MAX_TEXT: usize = 255;

impl MappingInput {
    /// The fields of a new mapping, or every problem (for one 400 listing them).
    pub fn create(&self) -> Result<MappingFields, Vec<String>> {
        self.merged(None)
    }

    /// `current` with this input's changes applied, or every problem.
    pub fn update(&self, current: &ProductMapping) -> Result<MappingFields, Vec<String>> {
        self.merged(Some(current))
    }

    fn merged(&self, current: Option<&ProductMapping>) -> Result<MappingFields, Vec<String>> {
        let mut problems = Vec::new();
        let mut text = |name: &str, value: &Option<String>, current: Option<&String>| -> String {
            let value = value.as_ref().or(current).map(|v| v.trim().to_owned());
            match value {
                None => {
                    problems.push(format!("{name} must be a string"));
                    String::new()
                }
                Some(v) if v.is_empty() => {
                    problems.push(format!("{name} should not be empty"));
                    v
                }
                Some(v) if v.chars().count() > MAX_TEXT => {
                    problems.push(format!("{name} must be at most {MAX_TEXT} characters"));
                    v
                }
                Some(v) => v,
            }
        };
        let sku = text("sku", &self.sku, current.map(|c| &c.sku));
        let product_name = text(
            "productName",
            &self.product_name,
            current.map(|c| &c.product_name),
        );
        let print_files = match (&self.print_files, current) {
            (Some(files), _) => validate_files(files, &mut problems),
            (None, Some(current)) => current.print_files.clone(),
            (None, None) => {
                problems.push("printFiles must contain at least 1 element".to_owned());
                Vec::new()
            }
        };
        let optional = |value: &Option<String>, current: Option<&Option<String>>| match value {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.trim().to_owned()),
            None => current.cloned().flatten(),
        };
        if problems.is_empty() {
            Ok(MappingFields {
                sku,
                product_name,
                shopify_product_id: optional(
                    &self.shopify_product_id,
                    current.map(|c| &c.shopify_product_id),
                ),
                shopify_variant_id: optional(
                    &self.shopify_variant_id,
                    current.map(|c| &c.shopify_variant_id),
                ),
                print_files,
                is_active: self
                    .is_active
                    .or(current.map(|c| c.is_active))
                    .unwrap_or(true),
            })
        } else {
            Err(problems)
        }
    }
}

fn validate_files(files: &[PrintFileInput], problems: &mut Vec<String>) -> Vec<PrintFile> {
    if files.is_empty() {
        problems.push("printFiles must contain at least 1 element".to_owned());
    }
    let mut valid = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut bad = false;
        for (name, value) in [("fileId", &file.file_id), ("fileName", &file.file_name)] {
            if value.trim().is_empty() {
                problems.push(format!("printFiles.{i}.{name} should not be empty"));
                bad = true;
            } else if value.chars().count() > MAX_TEXT {
                problems.push(format!(
                    "printFiles.{i}.{name} must be at most {MAX_TEXT} characters"
                ));
                bad = true;
            }
        }
        let mut count = |name: &str, value: Option<i64>| -> u32 {
            match value.unwrap_or(1) {
                n @ 1..=10_000 => n as u32,
                _ => {
                    problems.push(format!(
                        "printFiles.{i}.{name} must be an integer from 1 to 10000"
                    ));
                    bad = true;
                    1
                }
            }
        };
        let quantity = count("quantity", file.quantity);
        let units_per_print = count("unitsPerPrint", file.units_per_print);
        if !bad {
            valid.push(PrintFile {
                file_id: file.file_id.trim().to_owned(),
                file_name: file.file_name.trim().to_owned(),
                quantity,
                units_per_print,
                print_profile: file
                    .print_profile
                    .as_ref()
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty()),
            });
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(quantity: u32, units_per_print: u32) -> PrintFile {
        PrintFile {
            file_id: "f".into(),
            file_name: "f.gcode".into(),
            quantity,
            units_per_print,
            print_profile: None,
        }
    }

    #[test]
    fn prints_round_up_to_whole_prints() {
        assert_eq!(file(1, 4).prints_for(8), 2);
        assert_eq!(file(1, 2).prints_for(3), 2);
        assert_eq!(file(2, 1).prints_for(3), 6);
        assert_eq!(file(3, 4).prints_for(3), 3, "9 copies at 4 a print");
        assert_eq!(file(1, 1).prints_for(0), 0);
        assert_eq!(file(10_000, 1).prints_for(u32::MAX), 42_949_672_950_000);
    }

    #[test]
    fn every_problem_of_an_input_is_listed() {
        let input = MappingInput {
            sku: Some("  ".into()),
            product_name: None,
            print_files: Some(vec![PrintFileInput {
                file_id: String::new(),
                file_name: "a.gcode".into(),
                quantity: Some(0),
                units_per_print: Some(-3),
                print_profile: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            input.create().unwrap_err(),
            [
                "sku should not be empty",
                "productName must be a string",
                "printFiles.0.fileId should not be empty",
                "printFiles.0.quantity must be an integer from 1 to 10000",
                "printFiles.0.unitsPerPrint must be an integer from 1 to 10000",
            ]
        );
    }
}
