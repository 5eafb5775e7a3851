//! Tickets and prepared-statement handles.
//!
//! Both are self-contained: they carry the SQL, bound parameters and the
//! session settings in force, so this server after a restart (or another
//! replica sharing the secret) can serve them. They are signed with an HMAC of
//! the server secret so a client cannot alter them.
//!
//! ```text
//! "CT" version(u8) kind(u8) | JSON body | HMAC-SHA256(secret, everything before)
//! ```

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use bytes::Bytes;
use contrail_planner::SessionSettings;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

const MAGIC: &[u8; 2] = b"CT";
const VERSION: u8 = 1;
const MAC_LEN: usize = 32;

/// What a handle refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Ticket = 1,
    Prepared = 2,
}

/// A statement to run on `DoGet`, or the already-known result of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementTicket {
    /// Query id, for cancellation and logs.
    pub id: String,
    /// What to do when the ticket is redeemed.
    pub body: TicketBody,
    pub settings: SessionSettings,
}

/// The ticket's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TicketBody {
    /// A query: plan and stream it.
    Query {
        sql: String,
        /// One row of bound parameters, as an Arrow IPC stream (base64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<String>,
    },
    /// A statement that already ran when the FlightInfo was made (DDL, DML,
    /// SET): the ticket streams its row count. Redeeming it twice is harmless.
    Done { count: i64 },
}

/// A prepared statement handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedHandle {
    pub sql: String,
    pub settings: SessionSettings,
    /// Bound parameter rows (Arrow IPC stream, base64), set by `DoPut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// The key of the plan the preparing server keeps for the handle's first
    /// execution (see `plans`); any other server plans the SQL again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Signs and verifies handles with the server secret.
#[derive(Clone)]
pub struct Signer {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self) -> Result<Hmac<Sha256>> {
        // HMAC accepts keys of any length; the error case cannot happen.
        Hmac::<Sha256>::new_from_slice(&self.key).map_err(|e| Error::Internal {
            message: format!("HMAC key: {e}"),
        })
    }

    /// Sign arbitrary bytes (used for bearer tokens too).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut mac = self.mac()?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Constant-time check of a signature.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        let Ok(mut mac) = self.mac() else { return false };
        mac.update(data);
        mac.verify_slice(signature).is_ok()
    }

    pub fn encode_ticket(&self, t: &StatementTicket) -> Result<Bytes> {
        self.encode(Kind::Ticket, t)
    }

    pub fn decode_ticket(&self, bytes: &[u8]) -> Result<StatementTicket> {
        self.decode(Kind::Ticket, "ticket", bytes)
    }

    pub fn encode_prepared(&self, h: &PreparedHandle) -> Result<Bytes> {
        self.encode(Kind::Prepared, h)
    }

    pub fn decode_prepared(&self, bytes: &[u8]) -> Result<PreparedHandle> {
        self.decode(Kind::Prepared, "prepared statement handle", bytes)
    }

    fn encode<T: Serialize>(&self, kind: Kind, value: &T) -> Result<Bytes> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind as u8);
        serde_json::to_writer(&mut out, value).map_err(|e| Error::Internal { message: e.to_string() })?;
        let sig = self.sign(&out)?;
        out.extend_from_slice(&sig);
        Ok(out.into())
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, kind: Kind, what: &'static str, bytes: &[u8]) -> Result<T> {
        if bytes.len() < 4 + MAC_LEN || &bytes[..2] != MAGIC {
            return Err(Error::decode(what, "not a Contrail handle"));
        }
        if bytes[2] != VERSION {
            return Err(Error::decode(what, format!("unsupported version {}", bytes[2])));
        }
        if bytes[3] != kind as u8 {
            return Err(Error::decode(what, "wrong kind of handle"));
        }
        let (data, sig) = bytes.split_at(bytes.len() - MAC_LEN);
        if !self.verify(data, sig) {
            return Err(Error::decode(
                what,
                "signature mismatch (altered, or issued by a server with another secret)",
            ));
        }
        serde_json::from_slice(&data[4..]).map_err(|e| Error::decode(what, e))
    }
}

/// Encode parameter rows as a base64 Arrow IPC stream.
pub fn encode_params(batches: &[RecordBatch]) -> Result<Option<String>> {
    let Some(first) = batches.first() else { return Ok(None) };
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, first.schema().as_ref())?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(buf)))
}

/// Decode parameter rows.
pub fn decode_params(encoded: &str) -> Result<Vec<RecordBatch>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| Error::decode("parameters", e))?;
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Signer::new(b"secret");
        let t = StatementTicket {
            id: "q1".into(),
            body: TicketBody::Query {
                sql: "SELECT 1".into(),
                params: None,
            },
            settings: SessionSettings::default(),
        };
        let bytes = s.encode_ticket(&t).expect("encode");
        assert_eq!(s.decode_ticket(&bytes).expect("decode"), t);
        let mut bad = bytes.to_vec();
        bad[10] ^= 1;
        assert!(s.decode_ticket(&bad).is_err());
        assert!(Signer::new(b"other").decode_ticket(&bytes).is_err());
        assert!(s.decode_prepared(&bytes).is_err(), "kinds do not mix");
        assert!(s.decode_ticket(b"garbage").is_err());
    }
}
