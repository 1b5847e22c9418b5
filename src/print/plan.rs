//! What to print for an order (SPEC §6.4): the order service says which lines need which files
//! (it owns the product mappings); the print service turns that into print jobs, ceil(line quantity
//! × file quantity ÷ unitsPerPrint) per line and file. The wire format of `POST
//! /internal/print-jobs` and of the plan in `GET /internal/orders/{id}`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::mappings::PrintFile;

/// At most this many prints for one line: a line past it is a mistake (a quantity or a yield
/// typed wrong), refused instead of flooding the print farm.
pub const MAX_PRINTS_PER_LINE: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintPlan {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub lines: Vec<PlannedLine>,
}

/// One line to print: `quantity` units from `print_files`, as plan `generation` of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedLine {
    pub line_item_id: Uuid,
    pub generation: u32,
    pub quantity: u32,
    pub print_files: Vec<PrintFile>,
}

impl PlannedLine {
    /// How many prints the line takes in all.
    pub fn prints(&self) -> u64 {
        self.print_files
            .iter()
            .map(|f| f.prints_for(self.quantity))
            .sum()
    }
}
