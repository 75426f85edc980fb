//! `--format` of `dry-run` as a clap value: the library's
//! [`Format`](crate::engine::output::Format) stays free of clap, and the
//! command line learns its names and help texts here.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::engine::output::Format;

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Text, Format::Json, Format::Curl]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Format::Text => PossibleValue::new("text")
                .help("The request as HTTP/1.1 text (or the SMTP dialogue's essentials)"),
            Format::Json => PossibleValue::new("json").help("One JSON object"),
            Format::Curl => {
                PossibleValue::new("curl").help("A curl command line (HTTP targets only)")
            }
        })
    }
}
