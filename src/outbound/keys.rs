//! API keys of the `/v1/` API (`[[api_keys]]`, SPEC §5).
//!
//! Only the SHA-256 of each key is kept in memory; a presented key is hashed
//! and compared against every configured hash in constant time (all of
//! them, so the time does not tell which one matched). A key is scoped to
//! one project, or to a tenant whose caller names the project with
//! `X-Project-Id`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKeyConfig;
use crate::error::V1Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ConfigRead,
    ConfigWrite,
    EventsWrite,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ConfigRead => "config:read",
            Permission::ConfigWrite => "config:write",
            Permission::EventsWrite => "events:write",
        }
    }
    fn parse(s: &str) -> Option<Permission> {
        match s {
            "config:read" => Some(Permission::ConfigRead),
            "config:write" => Some(Permission::ConfigWrite),
            "events:write" => Some(Permission::EventsWrite),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Project(String),
    Tenant(String),
}

struct Key {
    name: String,
    hash: [u8; 32],
    permissions: Vec<Permission>,
    scope: Scope,
}

/// A caller that presented a valid key, with the project it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key: String,
    pub project: String,
    pub tenant: Option<String>,
    permissions: Vec<Permission>,
}

impl Caller {
    pub fn require(&self, p: Permission) -> Result<(), V1Error> {
        if self.permissions.contains(&p) {
            Ok(())
        } else {
            Err(V1Error::forbidden(format!(
                "the API key lacks the {} permission",
                p.as_str()
            )))
        }
    }
}

pub struct Keys {
    keys: Vec<Key>,
}

/// Longest `X-Project-Id` accepted.
const PROJECT_ID_MAX: usize = 255;

impl Keys {
    /// Resolves the configured keys (validated by `Config::validate`).
    pub fn from_config(cfg: &[ApiKeyConfig]) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (i, k) in cfg.iter().enumerate() {
            let hash = match (&k.key, &k.key_sha256) {
                (Some(src), _) => {
                    let secret = src
                        .resolve()
                        .map_err(|e| format!("api_keys[{i}].key: {e}"))?;
                    Sha256::digest(secret.expose()).into()
                }
                (None, Some(h)) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out)
                        .map_err(|_| format!("api_keys[{i}].key_sha256: must be 64 hex digits"))?;
                    out
                }
                (None, None) => return Err(format!("api_keys[{i}]: no key")),
            };
            let permissions = k
                .permissions
                .iter()
                .map(|p| {
                    Permission::parse(p)
                        .ok_or_else(|| format!("api_keys[{i}].permissions: unknown {p:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let scope = match (&k.project, &k.tenant) {
                (Some(p), None) => Scope::Project(p.clone()),
                (None, Some(t)) => Scope::Tenant(t.clone()),
                _ => return Err(format!("api_keys[{i}]: one of project, tenant")),
            };
            keys.push(Key {
                name: k.name.clone(),
                hash,
                permissions,
                scope,
            });
        }
        Ok(Keys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller of a request: `authorization` is the `Authorization`
    /// header (`Bearer <key>`), `project_header` the `X-Project-Id` header.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        project_header: Option<&[u8]>,
    ) -> Result<Caller, V1Error> {
        let presented = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(|k| k.trim_ascii())
            .filter(|k| !k.is_empty())
            .ok_or_else(V1Error::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            // Every key is compared; none is skipped once one matched.
            if bool::from(k.hash.ct_eq(&digest)) && found.is_none() {
                found = Some(k);
            }
        }
        let key = found.ok_or_else(V1Error::unauthorized)?;
        let header = match project_header {
            None => None,
            Some(v) => Some(
                std::str::from_utf8(v)
                    .ok()
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && p.len() <= PROJECT_ID_MAX)
                    .ok_or_else(|| {
                        V1Error::validation(
                            "X-Project-Id: must be a project id of 1-255 characters",
                        )
                    })?
                    .to_owned(),
            ),
        };
        let (project, tenant) = match &key.scope {
            Scope::Project(p) => {
                if header.as_ref().is_some_and(|h| h != p) {
                    return Err(V1Error::forbidden(
                        "the API key is scoped to another project than X-Project-Id",
                    ));
                }
                (p.clone(), None)
            }
            Scope::Tenant(t) => {
                let p = header.ok_or_else(|| {
                    V1Error::validation("X-Project-Id: required with a tenant-scoped API key")
                })?;
                (p, Some(t.clone()))
            }
        };
        Ok(Caller {
            key: key.name.clone(),
            project,
            tenant,
            permissions: key.permissions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn keys() -> Keys {
        let k =
            |name: &str, key: &str, perms: &[&str], project: Option<&str>, tenant: Option<&str>| {
                ApiKeyConfig {
                    name: name.into(),
                    key: Some(SecretSource {
                        value: Some(key.into()),
                        ..Default::default()
                    }),
                    key_sha256: None,
                    permissions: perms.iter().map(|p| p.to_string()).collect(),
                    project: project.map(Into::into),
                    tenant: tenant.map(Into::into),
                }
            };
        Keys::from_config(&[
            k(
                "app",
                "ss_app",
                &["config:read", "events:write"],
                Some("prj_1"),
                None,
            ),
            k("ops", "ss_ops", &["config:write"], None, Some("tnt_1")),
            ApiKeyConfig {
                name: "hashed".into(),
                key: None,
                key_sha256: Some(hex::encode(Sha256::digest(b"ss_hashed"))),
                permissions: vec!["config:read".into()],
                project: Some("prj_2".into()),
                tenant: None,
            },
        ])
        .unwrap()
    }

    #[test]
    fn keys_authenticate_by_hash_and_scope() {
        let k = keys();
        let c = k.authenticate(Some(b"Bearer ss_app"), None).unwrap();
        assert_eq!((c.key.as_str(), c.project.as_str()), ("app", "prj_1"));
        assert!(c.require(Permission::EventsWrite).is_ok());
        assert_eq!(
            c.require(Permission::ConfigWrite).unwrap_err().code,
            "FORBIDDEN"
        );
        let c = k.authenticate(Some(b"Bearer ss_hashed"), None).unwrap();
        assert_eq!(c.project, "prj_2");
        let c = k
            .authenticate(Some(b"Bearer ss_ops"), Some(b"prj_9"))
            .unwrap();
        assert_eq!(
            (c.project.as_str(), c.tenant.as_deref()),
            ("prj_9", Some("tnt_1"))
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer ss_ops"), None)
                .unwrap_err()
                .code,
            "VALIDATION_ERROR"
        );
        assert_eq!(
            k.authenticate(Some(b"Bearer ss_app"), Some(b"prj_other"))
                .unwrap_err()
                .code,
            "FORBIDDEN"
        );
        for bad in [
            None,
            Some(&b"ss_app"[..]),
            Some(b"Bearer "),
            Some(b"Bearer nope"),
            Some(b"Basic ss_app"),
        ] {
            assert_eq!(k.authenticate(bad, None).unwrap_err().code, "UNAUTHORIZED");
        }
    }
}
