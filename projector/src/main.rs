//! Tails the event log into the MongoDB views. Not built yet: see issue 3.

fn main() {
    eprintln!("projector is not implemented yet (tracked in issue 3)");
    std::process::exit(2);
}
