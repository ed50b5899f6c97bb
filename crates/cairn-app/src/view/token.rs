//! API tokens as every front shows them: never a secret, never a hash.

use cairn_ports::TokenRecord;
use serde_json::{Value, json};

use super::iso_time;

/// One token: `name`, `role`, `gate_roles`, `created_at`, `expires_at`,
/// `last_used_at` (times in RFC 3339, `null` when none).
pub fn json(t: &TokenRecord) -> Value {
    json!({
        "name": t.name,
        "role": t.role.word(),
        "gate_roles": t.gate_roles,
        "created_at": iso_time(t.created_at),
        "expires_at": t.expires_at.map(iso_time),
        "last_used_at": t.last_used_at.map(iso_time),
    })
}
