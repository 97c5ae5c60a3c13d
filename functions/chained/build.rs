//! Validates the triggers file and embeds it into this binary (an invalid file fails the build).
fn main() {
    triggers_config::build::embed();
}
