//! The human-readable status page served on `GET`: is the R2 bucket bound
//! and answering, and how to fix it if not.

use crate::config::Config;

/// The key read to prove the bucket answers. It never exists; a `null`
/// answer is success.
pub const PROBE_KEY: &str = "status/probe";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketState {
    /// The binding exists and a read succeeded.
    Working,
    /// No `BUCKET` binding in this deployment.
    Missing,
    /// The binding exists but R2 failed the read.
    Failing(String),
}

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(state: &BucketState, config: &Config, version: &str) -> String {
    let (class, headline, detail) = match state {
        BucketState::Working => (
            "ok",
            "R2 bucket is configured and answering. Ready to serve.".to_owned(),
            "Point the <code>p2pcf</code> client at this URL with the <code>workerUrl</code> option.".to_owned(),
        ),
        BucketState::Missing => (
            "bad",
            "No R2 bucket is bound to this worker.".to_owned(),
            "Create a bucket (<code>npx wrangler r2 bucket create p2pcf</code>), bind it as \
             <code>BUCKET</code> in <code>wrangler.toml</code> (<code>[[r2_buckets]]</code> with \
             <code>binding = \"BUCKET\"</code>), then deploy again. See INSTALL.md."
                .to_owned(),
        ),
        BucketState::Failing(reason) => (
            "bad",
            "The R2 bucket is bound but a read failed.".to_owned(),
            format!(
                "R2 answered: <code>{}</code>. Check that the bucket named in \
                 <code>wrangler.toml</code> exists in this account.",
                escape(reason)
            ),
        ),
    };
    let origins = if config.allowed_origins.is_empty() {
        "any".to_owned()
    } else {
        escape(&config.allowed_origins.join(", "))
    };
    let warnings: String = config
        .warnings
        .iter()
        .map(|w| format!("<p class=\"bad\">{}</p>", escape(w)))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>P2PCF signalling worker</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; }}
.ok {{ color: #11692c; }} .bad {{ color: #a4161a; }}
.state {{ font-size: 1.2rem; font-weight: 600; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }}
dt {{ color: #666; }} code {{ background: #f2f2f2; padding: 0 .2rem; }}
</style>
</head>
<body>
<h1>P2PCF signalling worker</h1>
<p id="bucket" class="state {class}">{headline}</p>
<p>{detail}</p>
{warnings}
<dl>
<dt>Version</dt><dd>p2pcf-rs {version}</dd>
<dt>Allowed origins</dt><dd>{origins}</dd>
<dt>Monthly quota for other origins</dt><dd>{quota}</dd>
</dl>
</body>
</html>
"#,
        version = escape(version),
        quota = config.origin_quota,
    )
}
