//! The sender's test configuration, shared by the sender and OpenAPI
//! tests: sender mode on, a fixed master key, short retries, and three API
//! keys (all permissions on `prj_def456`; read-only; tenant-scoped).

use std::path::Path;

pub const KEY: &str = "ss_secret_app_0123456789";
pub const READER: &str = "ss_secret_reader_0123456789";
pub const TENANT: &str = "ss_secret_tenant_0123456789";
pub const MASTER: &str = "8f1c3a5e7b9d0f2a4c6e8a0b2d4f6a8c0e2a4c6e8b0d2f4a6c8e0a2c4e6a8b0d";

/// `extra` is inserted among the `[sender]` keys.
pub fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[store]
path = "{db}"
[delivery]
poll_interval = "50ms"
[sender]
enabled = true
master_key = {{ value = "{MASTER}" }}
retry_schedule = ["200ms", "200ms", "200ms", "200ms"]
attempt_timeout = "2s"
channel_quota = 4
https_only = false
{extra}
[[api_keys]]
name = "app"
key = {{ value = "{KEY}" }}
permissions = ["config:read", "config:write", "events:write"]
project = "prj_def456"
[[api_keys]]
name = "reader"
key = {{ value = "{READER}" }}
permissions = ["config:read"]
project = "prj_def456"
[[api_keys]]
name = "tenant"
key = {{ value = "{TENANT}" }}
permissions = ["config:read", "config:write", "events:write"]
tenant = "tnt_xyz789"
"#,
        db = dir.join("hookgate.db").display()
    )
}
