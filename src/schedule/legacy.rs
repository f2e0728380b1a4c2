//! The flat form of a schedule, as files and tuning caches held it before
//! the schedule was typed: one object of eleven fields whose meaning
//! depended on `strategy`. It is read and migrated, never written.
//!
//! ```json
//! {"strategy": "direct", "oc_vectors": 1, "pixel_tile": 12, "reduction_unroll": 4,
//!  "row_tile": 1, "loop_order": "rows_outer", "col_block": null, "threads": 1,
//!  "split": "rows", "copy": "image", "interleave": false}
//! ```
//!
//! A flat schedule the typed form cannot hold (a knob its strategy has no
//! use for set to another value than the one it ran with) is refused with
//! the field's name, rather than silently changed.

use serde::Deserialize;

use super::{
    Algorithm, Depthwise, Direct, InputCopy, Layout, LoopNest, Run, Schedule, Split, Strategy,
    Tile, Width,
};
use crate::target::LANES;

/// The flat form, field for field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Flat {
    strategy: Strategy,
    oc_vectors: usize,
    pixel_tile: usize,
    reduction_unroll: usize,
    #[serde(default = "one")]
    row_tile: usize,
    loop_order: LoopOrder,
    #[serde(default)]
    col_block: Option<usize>,
    #[serde(default = "one")]
    threads: usize,
    #[serde(default)]
    split: Split,
    #[serde(default)]
    copy: InputCopy,
    #[serde(default)]
    interleave: bool,
}

/// The flat form's loop order; its `col_block` made the third case.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LoopOrder {
    ChannelsOuter,
    RowsOuter,
}

fn one() -> usize {
    1
}

impl Flat {
    /// The typed schedule this flat one ran as, or why there is none.
    pub(super) fn migrate(self) -> Result<Schedule, String> {
        let refuse = |field: &str, why: &str| {
            Err(format!("a flat (untyped) schedule's {field}: {why}; write it in the typed form"))
        };
        let tile = Tile {
            oc_vectors: self.oc_vectors,
            pixel_tile: self.pixel_tile,
            row_tile: self.row_tile,
        };
        if self.interleave && self.strategy != Strategy::Direct {
            return refuse("interleave", "only the direct strategy reads an NHWC copy");
        }
        let algorithm = match self.strategy {
            Strategy::Direct => Algorithm::Direct(Direct {
                tile,
                reduction_unroll: self.reduction_unroll,
                layout: if self.interleave { Layout::Nhwc } else { Layout::Nchw },
                row_length: None,
                merged_columns: false,
            }),
            Strategy::Depthwise if self.reduction_unroll != 1 => {
                return refuse(
                    "reduction_unroll",
                    "the depthwise strategy has no channel reduction",
                );
            }
            Strategy::Depthwise => Algorithm::Depthwise(Depthwise { tile }),
            Strategy::Width if self.oc_vectors != 1 => {
                return refuse("oc_vectors", "the width strategy computes one output channel");
            }
            Strategy::Width if self.pixel_tile == 0 || !self.pixel_tile.is_multiple_of(LANES) => {
                return refuse(
                    "pixel_tile",
                    &format!("the width strategy's tile is whole vectors of {LANES} pixels"),
                );
            }
            Strategy::Width => Algorithm::Width(Width {
                pixel_vectors: self.pixel_tile / LANES,
                row_tile: self.row_tile,
                reduction_unroll: self.reduction_unroll,
                channels: 1,
                row_length: None,
                joined: false,
                image: false,
            }),
        };
        let loop_nest = match (self.loop_order, self.col_block) {
            (LoopOrder::ChannelsOuter, None) => LoopNest::ChannelsOuter,
            (LoopOrder::ChannelsOuter, Some(_)) => {
                return refuse("col_block", "blocks rows only when rows are outer");
            }
            (LoopOrder::RowsOuter, None) => LoopNest::RowsOuter,
            (LoopOrder::RowsOuter, Some(b)) => LoopNest::ColumnBlocks(b),
        };
        Ok(Schedule {
            isa: crate::target::Isa::Sse,
            algorithm,
            winograd: None,
            loop_nest,
            copy: self.copy,
            run: Run { threads: self.threads, split: self.split },
        })
    }
}
