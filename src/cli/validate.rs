//! `highwater validate`: exactly the config parser, with every problem reported,
//! and warnings (on stderr, still exit 0) for what is valid but risky.

use serde_json::json;

use super::{CliError, Context, Exit, print};

pub fn validate(ctx: &mut Context) -> Result<Exit, CliError> {
    // With --json, the problems go out as JSON as well as in words.
    if ctx.json
        && let Err(e) = highwater_core::config::load(&ctx.config_path)
    {
        let problems: Vec<_> = e
            .problems
            .iter()
            .map(|p| json!({ "line": p.line, "key": p.key, "message": p.message }))
            .collect();
        print(
            json!({ "file": e.file.display().to_string(), "valid": false, "problems": problems }),
        )?;
        return Err(CliError::Usage(e.to_string()));
    }
    let config = ctx.config()?;
    let names: Vec<&str> = config.syncs.iter().map(|s| s.name.as_str()).collect();
    if ctx.json {
        let warnings: Vec<String> = config
            .warnings
            .iter()
            .map(|w| w.in_file(&config.file).to_string())
            .collect();
        print(
            json!({ "file": config.file.display().to_string(), "valid": true, "syncs": names, "warnings": warnings }),
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
