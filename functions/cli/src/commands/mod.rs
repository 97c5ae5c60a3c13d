pub mod check;
pub mod serve;
