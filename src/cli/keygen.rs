//! `callbridge keygen`: a new Ed25519 key pair (base64), for dev signing.

use base64::Engine as _;

use crate::telnyx::Signer;

/// Print a new Ed25519 key pair (base64) for dev signing.
#[derive(clap::Args, Debug)]
pub struct Keygen;

impl Keygen {
    pub fn run(self) {
        let (signer, pkcs8) = Signer::generate();
        let std = base64::engine::general_purpose::STANDARD;
        println!("public_key={}", std.encode(signer.public_key()));
        println!("private_key_pkcs8={}", std.encode(pkcs8));
    }
}
