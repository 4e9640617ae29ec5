//! Deletion receipts as `nook` shows and checks them.
//!
//! The text form is nook-crypto's [`PortableReceipt`] (`protocol-spec.md` §11.10): a
//! header line and six `key: value` lines a person can keep, mail, and check later,
//! offline, with `nook receipt verify`. `--json` shows the same fields as one object;
//! `verify` reads either.

use std::io::Read;
use std::process::ExitCode;

use nook_crypto::auth::{PortableReceipt, RECEIPT_HEADER, parse_rotation_value, rotation_value};
use serde_json::{Value, json};

use crate::error::{CliError, Kind};
use crate::output::Output;

/// What `nook receipt verify` answers for a receipt that parses but is not valid.
const INVALID: Kind = Kind::ReceiptInvalid;
/// Bytes read at most: a receipt is under 400 bytes; a saved `read --json` output
/// with one in it is larger, but not without bound.
const MAX_INPUT: u64 = 4 << 20;

/// The line shown above a receipt: what it is and what to do with it.
pub const KEEP: &str = "the relay's signed deletion receipt (verified); keep it to show the deletion later, `nook receipt verify FILE` checks it:";

/// The receipt as one JSON object: the fields of the text form (`closed_at` in
/// RFC 3339, `envelopes_deleted` a number), and whether this client verified it.
pub fn json(r: &PortableReceipt, verified: bool) -> Value {
    let [relay, relay_key, mailbox, closed_at, _, signature] = r.field_values();
    json!({
        "format": RECEIPT_HEADER,
        "relay": relay,
        "relay_key": relay_key,
        "mailbox": mailbox,
        "closed_at": closed_at,
        "envelopes_deleted": r.envelopes_deleted,
        "signature": signature,
        "rotations": r.rotations.iter().map(rotation_value).collect::<Vec<_>>(),
        "verified": verified,
    })
}

/// `nook receipt verify FILE|-`: 0 if the receipt is valid, 7 if it parses but is not,
/// 5 if nothing readable as a receipt is there.
pub fn verify(file: &str, out: &Output) -> Result<ExitCode, CliError> {
    let text = read(file)?;
    let receipt = parse(&text).map_err(|e| {
        CliError::Input(format!(
            "{} holds no deletion receipt nook can read: {e}",
            name(file)
        ))
    })?;
    if let Err(e) = receipt.verify() {
        let message = format!(
            "the receipt is NOT valid: {e} (relay {}, mailbox {})",
            receipt.relay,
            receipt.mailbox.to_hex()
        );
        if out.json {
            eprintln!(
                "{}",
                json!({"error": message, "exit_code": INVALID.exit_code(), "kind": INVALID.name(), "valid": false})
            );
        } else {
            eprintln!("error: {message}");
        }
        return Ok(ExitCode::from(INVALID.exit_code()));
    }
    if out.json {
        println!(
            "{}",
            json!({"valid": true, "receipt": json(&receipt, true)})
        );
    } else {
        println!(
            "valid: signed by the relay {} (its key is the one the address pins)",
            receipt.relay
        );
        println!(
            "mailbox {} was deleted at {} with {} envelope(s) still stored",
            receipt.mailbox.to_hex(),
            receipt.field_values()[3],
            receipt.envelopes_deleted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A receipt from text: the text form anywhere in it, or JSON as `--json` prints it
/// (the receipt object itself, or a line of `nook close` / `nook read` holding one).
fn parse(text: &str) -> Result<PortableReceipt, String> {
    if !text.trim_start().starts_with('{') {
        return text.parse::<PortableReceipt>().map_err(|e| e.to_string());
    }
    // One JSON value, or JSON lines (a saved `read --json`): exactly one receipt.
    let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("it is not JSON ({e})"))?,
    };
    let mut found = values.iter().filter_map(|v| match v.get("receipt") {
        Some(Value::Null) => None,
        Some(r) => Some(r),
        None => v.get("signature").is_some().then_some(v),
    });
    let (Some(r), None) = (found.next(), found.next()) else {
        return Err("it must hold exactly one receipt object".into());
    };
    from_json(r)
}

fn from_json(r: &Value) -> Result<PortableReceipt, String> {
    if let Some(format) = r.get("format")
        && format != RECEIPT_HEADER
    {
        return Err(format!("its format is {format}, not \"{RECEIPT_HEADER}\""));
    }
    let text = |key: &str| -> Result<String, String> {
        match r.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if key == "envelopes_deleted" => Ok(n.to_string()),
            Some(_) => Err(format!("its field \"{key}\" is malformed")),
            None => Err(format!("it lacks the field \"{key}\"")),
        }
    };
    let values = [
        text("relay")?,
        text("relay_key")?,
        text("mailbox")?,
        text("closed_at")?,
        text("envelopes_deleted")?,
        text("signature")?,
    ];
    // Each as the text form's `rotation` line writes it; absent: none.
    let rotations = match r.get("rotations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= nook_proto::limits::MAX_ROTATIONS => items
            .iter()
            .map(|v| v.as_str().and_then(parse_rotation_value))
            .collect::<Option<Vec<_>>>()
            .ok_or("its field \"rotations\" is malformed")?,
        Some(_) => return Err("its field \"rotations\" is malformed".into()),
    };
    PortableReceipt::from_field_values(values.each_ref().map(String::as_str))
        .map(|p| p.with_rotations(rotations))
        .map_err(|e| e.to_string())
}

/// The whole of `file`, or of stdin for `-`.
fn read(file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let result = if file == "-" {
        std::io::stdin().take(MAX_INPUT).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_INPUT).read_to_string(&mut text))
    };
    result.map_err(|e| CliError::Input(format!("cannot read {}: {e}", name(file))))?;
    Ok(text)
}

fn name(file: &str) -> String {
    if file == "-" {
        "stdin".into()
    } else {
        format!("{file:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nook_crypto::auth::RelayIdentity;
    use nook_crypto::{Fingerprint, RelayAddr};
    use nook_proto::MailboxId;

    fn receipt() -> PortableReceipt {
        let relay = RelayIdentity::from_seed(&[0x52; 32]);
        let addr = RelayAddr {
            fingerprint: Fingerprint::of_key(&relay.public().0),
            host: "relay.example".into(),
            port: 4433,
        };
        PortableReceipt::new(
            addr,
            relay.public(),
            &relay.sign_receipt(MailboxId([0x6d; 16]), 1_700_003_000, 3),
        )
    }

    #[test]
    fn json_shows_the_fields_of_the_text_form_and_reads_back() {
        let r = receipt();
        let j = json(&r, true);
        assert_eq!(j["closed_at"], "2023-11-14T23:03:20Z");
        assert_eq!(j["envelopes_deleted"], 3);
        assert_eq!(j["mailbox"], "6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d");
        assert_eq!(j["relay"], r.relay.to_string());
        assert_eq!(j["format"], "nook deletion receipt v1");
        for text in [
            j.to_string(),
            json!({"talk": "ab", "closed": true, "receipt": j}).to_string(),
            // A saved `read --json`: other lines, one closed event with the receipt.
            format!(
                "{}\n{}\n",
                json!({"type": "opened"}),
                json!({"type": "closed", "receipt": j})
            ),
            serde_json::to_string_pretty(&j).unwrap(),
            r.to_text(),
        ] {
            assert_eq!(parse(&text).unwrap(), r, "{text}");
        }
    }

    #[test]
    fn json_without_exactly_one_receipt_is_refused() {
        let j = json(&receipt(), true);
        for text in [
            json!({"type": "closed", "receipt": null}).to_string(),
            format!("{j}\n{j}\n"),
            "{not json".to_string(),
            json!({"signature": "00"}).to_string(),
            json!({"receipt": {"format": "nook deletion receipt v9"}}).to_string(),
        ] {
            assert!(parse(&text).is_err(), "{text}");
        }
        let mut missing = j.clone();
        missing.as_object_mut().unwrap().remove("mailbox");
        assert!(parse(&missing.to_string()).unwrap_err().contains("mailbox"));
    }
}
