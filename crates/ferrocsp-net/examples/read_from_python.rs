//! Reads the values a Python program writes to a networked channel, by the rules of the
//! project's `docs/wire.md` alone: raw `async-nats` for the transport (no `ferrocsp-net`
//! code), and the value codec decoded here, by that document's byte layout.
//!
//! `read_from_python URL NAME COUNT [NAMESPACE]` looks the channel up in the state bucket
//! (its capacity), reads `COUNT` values (rendezvous: as a reader in queue group `r`;
//! buffered: from the work-queue stream's `readers` consumer), claiming each value's id before
//! it takes the value (so that it takes part in exactly-once delivery with other readers),
//! printing `ready` once it listens and then each value on a line of its own as a Python
//! literal (a networked end as a dict describing it), then exits. `tests/test_net_wire.py`
//! runs it against Python writers.
//!
//! What it leaves out (wire.md says each is optional for a reader): it counts no reader end
//! and so needs no lease (writers never see the channel's readers all retired), reaps no
//! one, holds no read for a selecting writer (it answers claims of a reader `-`), and does
//! not claim the tickets of ends it is sent (it prints them). A signed pickle is refused: only
//! Python can load one.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// How long the whole run may take (it is a test's helper: it must not hang).
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, count, rest @ ..] = &args[..] else {
        return Err("usage: read_from_python URL NAME COUNT [NAMESPACE]".into());
    };
    let count: usize = count.parse()?;
    // wire.md, "Names": the subject root, the stream prefix and the bucket of a namespace.
    let (root, streams, bucket) = match rest.first() {
        Some(ns) => (format!("ferrocsp-{ns}"), format!("FERROCSP-{ns}_"), format!("FERROCSP-{ns}")),
        None => ("ferrocsp".to_owned(), "FERROCSP_".to_owned(), "FERROCSP".to_owned()),
    };
    let run = async {
        let client = async_nats::connect(url.as_str()).await?;
        let js = jetstream::new(client.clone());
        // wire.md, "State": key `<name>.cap` holds the capacity as a decimal.
        let kv = js.get_key_value(&bucket).await?;
        let cap = kv.get(format!("{name}.cap")).await?.ok_or("no such channel")?;
        let cap: u64 = std::str::from_utf8(&cap)?.parse()?;
        let base = format!("{root}.{name}");
        claims_stream(&js, &root, &bucket).await?;
        if cap == 0 {
            rendezvous(&js, &client, &base, count).await
        } else {
            buffered(&js, &client, &base, &format!("{streams}{name}"), count).await
        }
    };
    tokio::time::timeout(LIMIT, run).await.map_err(|_| "timed out")?
}

/// wire.md, "Claims of values": the namespace's claims stream, made by the first reader.
async fn claims_stream(js: &jetstream::Context, root: &str, bucket: &str) -> Result<(), BoxErr> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("CLAIMS_{bucket}"),
        subjects: vec![format!("{root}.*.c.*")],
        max_messages_per_subject: 1,
        max_age: Duration::from_secs(120),
        duplicate_window: Duration::from_secs(120),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// wire.md, "Claims of values": whether this reader won value `id` of channel `base`. The
/// server stores the first claim of an id only; a claim re-sent after its acknowledgement was
/// lost keeps its token and is answered "duplicate", which is a win too.
async fn claim(js: &jetstream::Context, base: &str, id: &str) -> Result<bool, BoxErr> {
    // A token unique to this claim: the client's inbox names are.
    let token = js.client().new_inbox();
    loop {
        let publish =
            PublishMessage::build().message_id(token.as_str()).expected_last_subject_sequence(0);
        let acked = match js.send_publish(format!("{base}.c.{id}"), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(false),
            // No answer: the same claim again.
            Err(e) if e.kind() == PublishErrorKind::TimedOut => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// wire.md, "Headers": a value id is one subject token, 1-64 of `A-Z a-z 0-9 _ -`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// wire.md, "Rendezvous": a reader subscribes to `<base>.w` in queue group `r`, announces
/// itself on `<base>.ready`, claims each value's `Csp-Id` and answers `+` once the claim is
/// decided, taking the value only if it won (a request whose `Csp-Id` it already settled is
/// answered `+` again, not claimed twice).
async fn rendezvous(
    js: &jetstream::Context,
    client: &async_nats::Client,
    base: &str,
    count: usize,
) -> Result<(), BoxErr> {
    let mut sub = client.queue_subscribe(format!("{base}.w"), "r".to_owned()).await?;
    client.flush().await?;
    client.publish(format!("{base}.ready"), Bytes::new()).await?;
    println!("ready");
    let mut settled: HashSet<String> = HashSet::new();
    let mut got = 0;
    while got < count {
        let m = sub.next().await.ok_or("subscription closed")?;
        // A release (`Csp-Release`) has no reply subject and is for holds this reader never
        // makes.
        let Some(reply) = m.reply.clone() else { continue };
        let header =
            |n: &str| m.headers.as_ref().and_then(|h| h.get(n)).map(|v| v.as_str().to_owned());
        if header("Csp-Claim").is_some() {
            client.publish(reply, Bytes::from_static(b"-")).await?;
            continue;
        }
        // Every value has an id; a request without a valid one is dropped unanswered.
        let Some(id) = header("Csp-Id").filter(|id| valid_id(id)) else { continue };
        if !settled.contains(&id) {
            // Lost: another reader took this value (a re-send after its `+` was lost); it is
            // answered `+` all the same.
            if claim(js, base, &id).await? {
                show(&m.payload);
                got += 1;
            }
            settled.insert(id);
        }
        client.publish(reply, Bytes::from_static(b"+")).await?;
    }
    client.flush().await?;
    Ok(())
}

/// wire.md, "Buffered": a reader pulls one message at a time from the durable consumer
/// `readers` of stream `FERROCSP_<name>`, passes over placeholders (header `Csp-Slot`: a
/// delayed NAK), claims a value's id and acknowledges it, takes it only if it won the claim,
/// then announces the freed slot on `<base>.ready`.
async fn buffered(
    js: &jetstream::Context,
    client: &async_nats::Client,
    base: &str,
    stream: &str,
    count: usize,
) -> Result<(), BoxErr> {
    let consumer: PullConsumer = js.get_stream(stream).await?.get_consumer("readers").await?;
    println!("ready");
    let mut got = 0;
    while got < count {
        let mut batch =
            consumer.batch().max_messages(1).expires(Duration::from_secs(1)).messages().await?;
        let Some(msg) = batch.next().await else { continue };
        let msg = msg?;
        if msg.headers.as_ref().is_some_and(|h| h.get("Csp-Slot").is_some()) {
            msg.ack_with(AckKind::Nak(Some(Duration::from_millis(20)))).await?;
            continue;
        }
        // The id: its `Nats-Msg-Id`, else `s<stream sequence>`.
        let own = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str());
        let id = match own.filter(|id| valid_id(id)) {
            Some(id) => id.to_owned(),
            None => format!("s{}", msg.info()?.stream_sequence),
        };
        let won = claim(js, base, &id).await?;
        // Acknowledged either way (a lost claim: another reader has the value); the ack's
        // confirmation changes nothing, the claim decided.
        let _ = msg.double_ack().await;
        if won {
            show(&msg.payload);
            client.publish(format!("{base}.ready"), Bytes::new()).await?;
            got += 1;
        }
    }
    Ok(())
}

fn show(frame: &[u8]) {
    match decode(frame) {
        Ok(v) => println!("{v}"),
        Err(e) => println!("! {e}"),
    }
}

// --- the value codec (wire.md, "Values") ---------------------------------------------------

const MAX_MESSAGE: usize = 64 << 20;
const MAX_DEPTH: usize = 64;
const MAX_ITEMS: u64 = 1 << 22;
const MAX_ENDS: usize = 256;

/// A decoded value, printed as a Python literal.
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// `I`: big-endian two's complement.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    End {
        reader: bool,
        capacity: i64,
        channel: String,
        ticket: String,
    },
}

fn decode(frame: &[u8]) -> Result<Value, String> {
    if frame.len() > MAX_MESSAGE {
        return Err(format!("message of {} bytes is over the limit", frame.len()));
    }
    match frame.first() {
        Some(1) => {}
        Some(2) => return Err("a signed pickle (format 2): only Python can load it".into()),
        Some(f) => return Err(format!("unknown message format {f:#04x}")),
        None => return Err("empty message".into()),
    }
    let mut d = Decoder { buf: frame, pos: 1, items: 0, ends: 0 };
    let v = d.value(0)?;
    if d.pos != frame.len() {
        return Err(format!("{} trailing bytes", frame.len() - d.pos));
    }
    Ok(v)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    items: u64,
    ends: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len32(&mut self) -> Result<usize, String> {
        usize::try_from(u32::from_be_bytes(self.fixed()?)).map_err(|e| e.to_string())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        let [tag] = self.fixed()?;
        Ok(match tag {
            b'N' => Value::None,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' => Value::Int(i64::from_be_bytes(self.fixed()?)),
            b'f' => Value::Float(f64::from_be_bytes(self.fixed()?)),
            b'I' | b's' | b'b' => {
                let n = self.len32()?;
                let raw = self.take(n)?.to_vec();
                match tag {
                    b'I' => Value::BigInt(raw),
                    // Python sends lone surrogates as their 3-byte UTF-8 forms ("surrogatepass");
                    // a Rust `String` cannot hold them, so such a string is refused here.
                    b's' => Value::Str(String::from_utf8(raw).map_err(|e| e.to_string())?),
                    _ => Value::Bytes(raw),
                }
            }
            b'l' | b't' | b'd' => {
                let n = self.len32()?;
                // Each element takes at least one byte (a dict entry two): a count beyond the
                // rest is malformed, and then no allocation is made from it.
                let per = if tag == b'd' { 2 } else { 1 };
                if n.saturating_mul(per) > self.buf.len() - self.pos {
                    return Err("container count beyond the message".into());
                }
                self.items += n as u64;
                if self.items > MAX_ITEMS {
                    return Err("too many container elements".into());
                }
                if tag == b'd' {
                    let mut d = Vec::with_capacity(n);
                    for _ in 0..n {
                        let k = self.value(depth + 1)?;
                        d.push((k, self.value(depth + 1)?));
                    }
                    Value::Dict(d)
                } else {
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.value(depth + 1)?);
                    }
                    if tag == b'l' {
                        Value::List(items)
                    } else {
                        Value::Tuple(items)
                    }
                }
            }
            b'E' => {
                let [kind] = self.fixed()?;
                let capacity = i64::from_be_bytes(self.fixed()?);
                let n = self.len32()?;
                let channel = self.take(n)?.to_vec();
                let [n] = self.fixed()?;
                let ticket = self.take(usize::from(n))?.to_vec();
                let ticket_ok = !ticket.is_empty()
                    && ticket.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
                if !matches!(kind, b'r' | b'w') || capacity < 0 || !ticket_ok || !channel.is_ascii()
                {
                    return Err("bad channel end".into());
                }
                self.ends += 1;
                if self.ends > MAX_ENDS {
                    return Err("too many channel ends".into());
                }
                Value::End {
                    reader: kind == b'r',
                    capacity,
                    channel: String::from_utf8_lossy(&channel).into_owned(),
                    ticket: String::from_utf8_lossy(&ticket).into_owned(),
                }
            }
            t => return Err(format!("unknown tag {t:#04x}")),
        })
    }
}

// --- printing as Python literals -------------------------------------------------------------

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(raw) => f.write_str(&big_int(raw)),
            // Rust prints the shortest form that reads back the same, as Python does; an
            // infinity as a literal Python reads as one. NaN has no literal.
            Value::Float(x) if x.is_nan() => f.write_str("nan"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "1e999" } else { "-1e999" })
            }
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => f.write_str(&py_str(s)),
            Value::Bytes(b) => f.write_str(&py_bytes(b)),
            Value::List(v) => seq(f, "[", v, "]"),
            Value::Tuple(v) if v.len() == 1 => write!(f, "({},)", v[0]),
            Value::Tuple(v) => seq(f, "(", v, ")"),
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::End { reader, capacity, channel, ticket } => write!(
                f,
                "{{'end': '{}', 'capacity': {capacity}, 'channel': {}, 'ticket': {}}}",
                if *reader { "reader" } else { "writer" },
                py_str(channel),
                py_str(ticket)
            ),
        }
    }
}

fn seq(f: &mut std::fmt::Formatter<'_>, open: &str, v: &[Value], close: &str) -> std::fmt::Result {
    f.write_str(open)?;
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    f.write_str(close)
}

/// A two's complement big-endian integer as a Python hex literal (`-0x...` if negative).
fn big_int(raw: &[u8]) -> String {
    let negative = raw.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag = raw.to_vec();
    if negative {
        // Magnitude = two's complement negation: invert, then add one.
        for b in &mut mag {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut hex = String::new();
    for b in &mag {
        let _ = write!(hex, "{b:02x}");
    }
    let digits = hex.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    format!("{}0x{digits}", if negative { "-" } else { "" })
}

fn py_str(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn py_bytes(b: &[u8]) -> String {
    let mut out = String::from("b'");
    for &x in b {
        match x {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(char::from(x)),
            _ => {
                let _ = write!(out, "\\x{x:02x}");
            }
        }
    }
    out.push('\'');
    out
}
