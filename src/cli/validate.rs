//! `highwater validate`: exactly the config parser, with every problem reported,
//! and warnings (on stderr, still exit 0) for what is valid but risky.

use serde_json::json;

use super::{CliError, Context, Exit, print};

pub fn validate(ctx: &mut Context) -> Result<Exit, CliError> {
    let config = ctx.config()?;
    let names: Vec<&str> = config.syncs.iter().map(|s| s.name.as_str()).collect();
    if ctx.json {
        let warnings: Vec<String> = config
            .warnings
            .iter()
            .map(|w| w.in_file(&config.file).to_string())
            .collect();
        print(
            json!({ "file": config.file.display().to_string(), "syncs": names, "warnings": warnings }),
        )?;
        return Ok(Exit::Complete);
    }
    for warning in &config.warnings {
        eprintln!("warning: {}", warning.in_file(&config.file));
    }
    print(format_args!(
        "{}: ok — {} sync{}{}{}",
        config.file.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    ))?;
    Ok(Exit::Complete)
}
