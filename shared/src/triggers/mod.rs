//! The trigger-spec layer every trigger kind shares.

pub mod outcome;
