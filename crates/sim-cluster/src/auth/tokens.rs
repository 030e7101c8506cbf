//! Bearer tokens: the admin's, and service-account tokens issued at start (`--service-account`)
//! or through the TokenRequest API (`kubectl create token`). Tokens are opaque random strings;
//! a service-account token stops working when its account is deleted (or recreated: the UID
//! is checked) or when it expires.

use std::collections::HashMap;

use jiff::Timestamp;
use parking_lot::RwLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Admin,
    ServiceAccount {
        namespace: String,
        name: String,
        uid: String,
        expires: Option<Timestamp>,
    },
}

#[derive(Debug, Default)]
pub struct Tokens {
    by_token: RwLock<HashMap<String, Holder>>,
}

/// 32 bytes from the system's secure generator, hex: unguessable and safe in a header.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    if rng.fill(&mut bytes).is_err() {
        // Only if the OS cannot provide randomness; still unique within this process.
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    pub fn issue(&self, holder: Holder) -> String {
        let token = random_token();
        self.by_token.write().insert(token.clone(), holder);
        token
    }

    pub fn lookup(&self, token: &str) -> Option<Holder> {
        self.by_token.read().get(token).cloned()
    }
}
