pub mod check;
pub mod history;
pub mod next;
pub mod serve;
