//! `highwater validate`: exactly the config parser, with every problem reported,
//! and warnings (on stderr, still exit 0) for what is valid but risky.

use std::path::Path;

use super::{EXIT_OK, EXIT_USAGE};

pub fn validate(config: &Path) -> u8 {
    match highwater_core::config::load(config) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {}", warning.in_file(&config.file));
            }
            let names: Vec<&str> = config.syncs.iter().map(|s| s.name.as_str()).collect();
            println!(
                "{}: ok — {} sync{}{}{}",
                config.file.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if names.is_empty() { "" } else { ": " },
                names.join(", ")
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
    }
}
