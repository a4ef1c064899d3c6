//! Query side: serves the MongoDB views over REST. Not built yet: see issue 4.

fn main() {
    eprintln!("read-service is not implemented yet (tracked in issue 4)");
    std::process::exit(2);
}
