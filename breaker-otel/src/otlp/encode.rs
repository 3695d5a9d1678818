//! The OTLP trace export request written straight from a batch of `SpanData`: the bytes of
//! `ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch,
//! resource) }`, with none of those messages built.
//!
//! Why by hand: building the messages costs a `String` per attribute key and value and a
//! `Vec` per span, and prost then computes each nested message's length again at every
//! level above it; together most of the export's CPU per span (`docs/pipeline.md`). Here
//! one walk of the batch ([`walk`]) writes each byte once, into one buffer. A
//! nested message's length is only known once its body is written, so the [`Encoder`]
//! leaves room for it in front of the body, as many bytes as that kind of message most
//! likely needs, and moves the body along when the guess was wrong. The tests prove the
//! bytes equal to prost's encoding of the transform's output.
//!
//! Not here: decoding. A request is only ever sent; [`SpanBatch`] refuses to be decoded.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, Status, TraceFlags, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::trace::v1::SpanFlags;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoSpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::DecodeError;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, encoded_len_varint};

/// One OTLP trace export request, encoded: the batch grouped by instrumentation scope and
/// written out.
///
/// Its [`prost::Message`] encoding is exactly prost's encoding of the request that
/// `opentelemetry-proto`'s `group_spans_by_resource_and_scope` builds from the same batch
/// and resource: the same fields, in the same order, scopes in the order of their first span.
pub(crate) struct SpanBatch {
    /// The request's bytes; empty once cleared (the empty message).
    bytes: Vec<u8>,
    /// How many spans it holds.
    spans: usize,
}

/// Bytes to reserve per span: a server span with ten attributes takes about 300.
const BYTES_PER_SPAN: usize = 384;

impl SpanBatch {
    /// Encodes the batch.
    pub(crate) fn new(spans: &[SpanData], resource: &Resource) -> Self {
        crate::pace::batch_begins();
        let mut encoder = Encoder {
            buf: Vec::with_capacity(64 + spans.len() * BYTES_PER_SPAN),
        };
        walk(&mut encoder, spans, &group_by_scope(spans), resource);
        Self {
            bytes: encoder.buf,
            spans: spans.len(),
        }
    }
}

/// The request, field by field, in prost's order (by field number).
fn walk(s: &mut Encoder, spans: &[SpanData], scopes: &[Vec<usize>], resource: &Resource) {
    // A batch's request and its scopes' spans: from 16 KiB to 2 MiB, three bytes.
    s.message_of_width(field::request::RESOURCE_SPANS, 3, |s| {
        s.message(field::resource_spans::RESOURCE, |s| {
            for (key, value) in resource.iter() {
                key_value(s, field::resource::ATTRIBUTES, key.as_str(), value);
            }
        });
        for group in scopes {
            s.message_of_width(field::resource_spans::SCOPE_SPANS, 3, |s| {
                scope_spans(s, spans, group);
            });
        }
        string(
            s,
            field::resource_spans::SCHEMA_URL,
            resource.schema_url().unwrap_or_default(),
        );
    });
}

/// One `ScopeSpans`: the scope of the group's first span, then the group's spans.
fn scope_spans(s: &mut Encoder, spans: &[SpanData], group: &[usize]) {
    let Some(&first) = group.first() else {
        return;
    };
    let scope = &spans[first].instrumentation_scope;
    s.message(field::scope_spans::SCOPE, |s| {
        string(s, field::scope::NAME, scope.name());
        string(
            s,
            field::scope::VERSION,
            scope.version().unwrap_or_default(),
        );
        for attribute in scope.attributes() {
            key_value(
                s,
                field::scope::ATTRIBUTES,
                attribute.key.as_str(),
                &attribute.value,
            );
        }
    });
    for &index in group {
        // A span: from 128 bytes to 16 KiB, two bytes.
        s.message_of_width(field::scope_spans::SPANS, 2, |s| span(s, &spans[index]));
        crate::pace::span_done();
    }
    string(
        s,
        field::scope_spans::SCHEMA_URL,
        scope.schema_url().unwrap_or_default(),
    );
}

impl fmt::Debug for SpanBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanBatch")
            .field("spans", &self.spans)
            .field("encoded_len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl prost::Message for SpanBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    #[expect(
        deprecated,
        reason = "`DecodeError::new` is prost's only way to say why a message does not decode"
    )]
    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: WireType,
        _buf: &mut impl Buf,
        _ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        Err(DecodeError::new(
            "a SpanBatch is only ever encoded; decode an ExportTraceServiceRequest instead",
        ))
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans = 0;
    }
}

/// The spans' indices grouped by instrumentation scope as the transform groups them: groups
/// in the order of their first span, spans in batch order, scopes compared with
/// `InstrumentationScope`'s own `==` (attributes in any order), as its `HashMap` does.
///
/// A linear search, the previous span's group first: a batch has one or two scopes.
fn group_by_scope(spans: &[SpanData]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut last = 0;
    for (index, span) in spans.iter().enumerate() {
        let scope = &span.instrumentation_scope;
        let same = |group: &Vec<usize>| {
            group
                .first()
                .is_some_and(|&first| same_scope(&spans[first].instrumentation_scope, scope))
        };
        let found = if groups.get(last).is_some_and(same) {
            Some(last)
        } else {
            groups.iter().position(same)
        };
        match found {
            Some(group) => {
                groups[group].push(index);
                last = group;
            }
            None => {
                last = groups.len();
                let mut group = Vec::with_capacity(if index == 0 { spans.len() } else { 1 });
                group.push(index);
                groups.push(group);
            }
        }
    }
    groups
}

/// `a == b`, without `==`'s two sorted copies of the attributes when they are the same
/// list: the SDK clones one tracer's scope into each of its spans. Lists equal in order
/// sort alike, so the shortcut never says equal where `==` would not.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    // `==` compares these three first as well: a span of another tracer costs one
    // comparison of names, not two.
    a.name() == b.name()
        && a.version() == b.version()
        && a.schema_url() == b.schema_url()
        && (a.attributes().eq(b.attributes()) || a == b)
}

/// One `Span`, as the transform's `From<SpanData> for Span` fills it.
fn span(s: &mut Encoder, span: &SpanData) {
    use field::span as tag;
    let context = &span.span_context;
    s.bytes(tag::TRACE_ID, &context.trace_id().to_bytes());
    s.bytes(tag::SPAN_ID, &context.span_id().to_bytes());
    trace_state(s, tag::TRACE_STATE, context.trace_state());
    if span.parent_span_id != SpanId::INVALID {
        s.bytes(tag::PARENT_SPAN_ID, &span.parent_span_id.to_bytes());
    }
    string(s, tag::NAME, &span.name);
    enumeration(
        s,
        tag::KIND,
        ProtoSpanKind::from(span.span_kind.clone()) as i32,
    );
    fixed64(s, tag::START_TIME_UNIX_NANO, unix_nanos(span.start_time));
    fixed64(s, tag::END_TIME_UNIX_NANO, unix_nanos(span.end_time));
    attributes(s, tag::ATTRIBUTES, &span.attributes);
    uint32(
        s,
        tag::DROPPED_ATTRIBUTES_COUNT,
        span.dropped_attributes_count,
    );
    for event in &*span.events {
        s.message(tag::EVENTS, |s| {
            use field::event as tag;
            fixed64(s, tag::TIME_UNIX_NANO, unix_nanos(event.timestamp));
            string(s, tag::NAME, &event.name);
            attributes(s, tag::ATTRIBUTES, &event.attributes);
            uint32(
                s,
                tag::DROPPED_ATTRIBUTES_COUNT,
                event.dropped_attributes_count,
            );
        });
    }
    uint32(s, tag::DROPPED_EVENTS_COUNT, span.events.dropped_count);
    for link in &*span.links {
        s.message(tag::LINKS, |s| {
            use field::link as tag;
            let context = &link.span_context;
            s.bytes(tag::TRACE_ID, &context.trace_id().to_bytes());
            s.bytes(tag::SPAN_ID, &context.span_id().to_bytes());
            trace_state(s, tag::TRACE_STATE, context.trace_state());
            attributes(s, tag::ATTRIBUTES, &link.attributes);
            uint32(
                s,
                tag::DROPPED_ATTRIBUTES_COUNT,
                link.dropped_attributes_count,
            );
            fixed32(
                s,
                tag::FLAGS,
                span_flags(context.is_remote(), context.trace_flags()),
            );
        });
    }
    uint32(s, tag::DROPPED_LINKS_COUNT, span.links.dropped_count);
    // Always present, also when unset.
    s.message(tag::STATUS, |s| {
        if let Status::Error { description } = &span.status {
            string(s, field::status::MESSAGE, description);
        }
        enumeration(
            s,
            field::status::CODE,
            StatusCode::from(&span.status) as i32,
        );
    });
    fixed32(
        s,
        tag::FLAGS,
        span_flags(span.parent_span_is_remote, context.trace_flags()),
    );
}

/// The W3C `tracestate` header, left out when there is none (most spans): building the
/// header allocates, and even an empty one takes longer than the check.
fn trace_state(s: &mut Encoder, tag: u32, state: &TraceState) {
    if *state != TraceState::NONE {
        string(s, tag, &state.header());
    }
}

/// The OTLP span flags: the W3C trace flags, and that the context says whether it is
/// remote (the transform's `build_span_flags`).
fn span_flags(is_remote: bool, trace_flags: TraceFlags) -> u32 {
    let mut flags = u32::from(trace_flags.to_u8()) | SpanFlags::ContextHasIsRemoteMask as u32;
    if is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

/// Nanoseconds since the epoch, 0 before it, as the transform's `to_nanos` (truncating
/// past the year 2554, as it does).
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}

#[inline]
fn attributes(s: &mut Encoder, tag: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        key_value(s, tag, attribute.key.as_str(), &attribute.value);
    }
}

/// One `KeyValue` field: the key, and the value, which is always present.
///
/// Most attributes are short strings, written in place; the rest are a call away, so that
/// the short ones pay for no registers the general case needs.
#[inline]
fn key_value(s: &mut Encoder, tag: u32, key: &str, value: &Value) {
    if let Value::String(text) = value
        && s.short_string_attribute(tag, key, text.as_str())
    {
        return;
    }
    any_key_value(s, tag, key, value);
}

#[inline(never)]
fn any_key_value(s: &mut Encoder, tag: u32, key: &str, value: &Value) {
    s.message(tag, |s| {
        string(s, field::key_value::KEY, key);
        s.message(field::key_value::VALUE, |s| any_value(s, value));
    });
}

/// An `AnyValue`'s contents: its `oneof`, written even when it holds a default.
fn any_value(s: &mut Encoder, value: &Value) {
    use field::any_value as tag;
    match value {
        Value::Bool(value) => s.scalar(tag::BOOL_VALUE, Scalar::Bool(*value)),
        Value::I64(value) => s.scalar(tag::INT_VALUE, Scalar::Int64(*value)),
        Value::F64(value) => s.scalar(tag::DOUBLE_VALUE, Scalar::Double(*value)),
        Value::String(value) => s.bytes(tag::STRING_VALUE, value.as_str().as_bytes()),
        Value::Array(array) => s.message(tag::ARRAY_VALUE, |s| array_value(s, array)),
        // A kind newer than opentelemetry 0.33, on which the transform panics: sent as
        // an attribute without a value rather than failing the export.
        _ => {}
    }
}

/// An `ArrayValue`'s contents: one `AnyValue` per element.
fn array_value(s: &mut Encoder, array: &Array) {
    use field::any_value as tag;
    const VALUES: u32 = field::array_value::VALUES;
    match array {
        Array::Bool(values) => {
            for &value in values {
                s.message(VALUES, |s| s.scalar(tag::BOOL_VALUE, Scalar::Bool(value)));
            }
        }
        Array::I64(values) => {
            for &value in values {
                s.message(VALUES, |s| s.scalar(tag::INT_VALUE, Scalar::Int64(value)));
            }
        }
        Array::F64(values) => {
            for &value in values {
                s.message(VALUES, |s| {
                    s.scalar(tag::DOUBLE_VALUE, Scalar::Double(value))
                });
            }
        }
        Array::String(values) => {
            for value in values {
                s.message(VALUES, |s| {
                    s.bytes(tag::STRING_VALUE, value.as_str().as_bytes());
                });
            }
        }
        // As for a value of a newer kind: an empty array rather than a failed export.
        _ => {}
    }
}

// proto3 fields without explicit presence are left out at their default value, as prost's
// generated code does.

fn string(s: &mut Encoder, tag: u32, value: &str) {
    if !value.is_empty() {
        s.bytes(tag, value.as_bytes());
    }
}

fn uint32(s: &mut Encoder, tag: u32, value: u32) {
    if value != 0 {
        s.scalar(tag, Scalar::Uint32(value));
    }
}

fn enumeration(s: &mut Encoder, tag: u32, value: i32) {
    if value != 0 {
        s.scalar(tag, Scalar::Int32(value));
    }
}

fn fixed64(s: &mut Encoder, tag: u32, value: u64) {
    if value != 0 {
        s.scalar(tag, Scalar::Fixed64(value));
    }
}

fn fixed32(s: &mut Encoder, tag: u32, value: u32) {
    if value != 0 {
        s.scalar(tag, Scalar::Fixed32(value));
    }
}

/// A field that is not length-delimited, typed as the generated code types it.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Uint32(u32),
    /// An `enum`.
    Int32(i32),
    Int64(i64),
    Bool(bool),
    Double(f64),
    Fixed32(u32),
    Fixed64(u64),
}

/// Writes the walk's fields into one buffer, each byte once.
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// A length-delimited field holding the message that `body` writes, most likely
    /// shorter than 128 bytes.
    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Self)) {
        self.message_of_width(tag, 1, body);
    }

    /// A length-delimited field whose length most likely takes `width` bytes: room for
    /// them is left in front of the body, and the body moves only when the guess was wrong.
    fn message_of_width(&mut self, tag: u32, width: usize, body: impl FnOnce(&mut Self)) {
        length_delimited_key(tag, &mut self.buf);
        let at = self.buf.len();
        for _ in 0..width {
            self.buf.push(0);
        }
        body(self);
        let len = self.buf.len() - at - width;
        let needed = encoded_len_varint(len as u64);
        if needed > width {
            self.buf.resize(self.buf.len() + needed - width, 0);
            self.buf
                .copy_within(at + width..at + width + len, at + needed);
        } else if needed < width {
            self.buf
                .copy_within(at + width..at + width + len, at + needed);
            self.buf.truncate(at + needed + len);
        }
        varint(len as u64, &mut &mut self.buf[at..at + needed]);
    }

    /// The `KeyValue` field of a string attribute, the same bytes as [`key_value`] writes,
    /// when all of it is shorter than 128 bytes (most attributes): then every length is
    /// one byte, known before anything is written, and the field goes out in four pieces.
    /// Returns `false`, having written nothing, for a longer one.
    #[inline]
    fn short_string_attribute(&mut self, tag: u32, key: &str, text: &str) -> bool {
        let (key, text) = (key.as_bytes(), text.as_bytes());
        // `AnyValue { string_value }`: written even when empty.
        let any_value = 2 + text.len();
        // `KeyValue { key, value }`: the key is left out when empty.
        let key_field = if key.is_empty() { 0 } else { 2 + key.len() };
        let key_value = key_field + 2 + any_value;
        let field_key = u64::from(tag << 3 | WireType::LengthDelimited as u32);
        if key_value >= 0x80 || field_key >= 0x80 {
            return false;
        }
        let byte = |tag: u32| (tag << 3 | WireType::LengthDelimited as u32) as u8;
        self.buf.reserve(2 + key_value);
        if key.is_empty() {
            self.buf
                .extend_from_slice(&[field_key as u8, key_value as u8]);
        } else {
            self.buf.extend_from_slice(&[
                field_key as u8,
                key_value as u8,
                byte(field::key_value::KEY),
                key.len() as u8,
            ]);
            self.buf.extend_from_slice(key);
        }
        self.buf.extend_from_slice(&[
            byte(field::key_value::VALUE),
            any_value as u8,
            byte(field::any_value::STRING_VALUE),
            text.len() as u8,
        ]);
        self.buf.extend_from_slice(text);
        true
    }

    /// A `string` or `bytes` field, written even when empty.
    fn bytes(&mut self, tag: u32, value: &[u8]) {
        // prost's `string::encode` and `bytes::encode`, which take owned types only.
        length_delimited_key(tag, &mut self.buf);
        varint(value.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(value);
    }

    /// Any other field, written even when zero. Inlined: each caller passes one kind,
    /// and the `match` goes away (`#[inline]` alone left it a call).
    #[inline(always)]
    fn scalar(&mut self, tag: u32, value: Scalar) {
        // prost's `encoding::{uint32, int32, …}::encode`, through [`varint`].
        let buf = &mut self.buf;
        let key = |wire_type: WireType| u64::from(tag << 3 | wire_type as u32);
        match value {
            Scalar::Uint32(value) => {
                varint(key(WireType::Varint), buf);
                varint(u64::from(value), buf);
            }
            Scalar::Int32(value) => {
                varint(key(WireType::Varint), buf);
                // Sign-extended to ten bytes when negative, as protobuf wants an `int32`.
                varint(i64::from(value).cast_unsigned(), buf);
            }
            Scalar::Int64(value) => {
                varint(key(WireType::Varint), buf);
                varint(value.cast_unsigned(), buf);
            }
            Scalar::Bool(value) => {
                varint(key(WireType::Varint), buf);
                varint(u64::from(value), buf);
            }
            Scalar::Double(value) => {
                varint(key(WireType::SixtyFourBit), buf);
                buf.put_f64_le(value);
            }
            Scalar::Fixed32(value) => {
                varint(key(WireType::ThirtyTwoBit), buf);
                buf.put_u32_le(value);
            }
            Scalar::Fixed64(value) => {
                varint(key(WireType::SixtyFourBit), buf);
                buf.put_u64_le(value);
            }
        }
    }
}

/// prost's `encode_varint`, inlined: seven bits a byte, low bits first, the high bit set
/// on all bytes but the last. Almost every key and length here takes one byte or two;
/// prost's own is not inlined, and its call was the encoder's largest cost
/// (`docs/pipeline.md`).
/// Written to the end of the buffer, or into the room left for a length (`&mut [u8]`).
#[inline]
fn varint(mut value: u64, buf: &mut impl BufMut) {
    while value >= 0x80 {
        buf.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// prost's `encode_key` for a length-delimited field, through [`varint`].
#[inline]
fn length_delimited_key(tag: u32, buf: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | WireType::LengthDelimited as u32), buf);
}

/// Field numbers, as in `opentelemetry-proto`'s generated messages (`#[prost(tag = …)]`).
mod field {
    pub(super) mod request {
        pub(crate) const RESOURCE_SPANS: u32 = 1;
    }
    pub(super) mod resource_spans {
        pub(crate) const RESOURCE: u32 = 1;
        pub(crate) const SCOPE_SPANS: u32 = 2;
        pub(crate) const SCHEMA_URL: u32 = 3;
    }
    pub(super) mod resource {
        pub(crate) const ATTRIBUTES: u32 = 1;
    }
    pub(super) mod scope_spans {
        pub(crate) const SCOPE: u32 = 1;
        pub(crate) const SPANS: u32 = 2;
        pub(crate) const SCHEMA_URL: u32 = 3;
    }
    /// `InstrumentationScope`.
    pub(super) mod scope {
        pub(crate) const NAME: u32 = 1;
        pub(crate) const VERSION: u32 = 2;
        pub(crate) const ATTRIBUTES: u32 = 3;
    }
    pub(super) mod span {
        pub(crate) const TRACE_ID: u32 = 1;
        pub(crate) const SPAN_ID: u32 = 2;
        pub(crate) const TRACE_STATE: u32 = 3;
        pub(crate) const PARENT_SPAN_ID: u32 = 4;
        pub(crate) const NAME: u32 = 5;
        pub(crate) const KIND: u32 = 6;
        pub(crate) const START_TIME_UNIX_NANO: u32 = 7;
        pub(crate) const END_TIME_UNIX_NANO: u32 = 8;
        pub(crate) const ATTRIBUTES: u32 = 9;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 10;
        pub(crate) const EVENTS: u32 = 11;
        pub(crate) const DROPPED_EVENTS_COUNT: u32 = 12;
        pub(crate) const LINKS: u32 = 13;
        pub(crate) const DROPPED_LINKS_COUNT: u32 = 14;
        pub(crate) const STATUS: u32 = 15;
        pub(crate) const FLAGS: u32 = 16;
    }
    pub(super) mod event {
        pub(crate) const TIME_UNIX_NANO: u32 = 1;
        pub(crate) const NAME: u32 = 2;
        pub(crate) const ATTRIBUTES: u32 = 3;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 4;
    }
    pub(super) mod link {
        pub(crate) const TRACE_ID: u32 = 1;
        pub(crate) const SPAN_ID: u32 = 2;
        pub(crate) const TRACE_STATE: u32 = 3;
        pub(crate) const ATTRIBUTES: u32 = 4;
        pub(crate) const DROPPED_ATTRIBUTES_COUNT: u32 = 5;
        pub(crate) const FLAGS: u32 = 6;
    }
    pub(super) mod status {
        pub(crate) const MESSAGE: u32 = 2;
        pub(crate) const CODE: u32 = 3;
    }
    pub(super) mod key_value {
        pub(crate) const KEY: u32 = 1;
        pub(crate) const VALUE: u32 = 2;
    }
    pub(super) mod any_value {
        pub(crate) const STRING_VALUE: u32 = 1;
        pub(crate) const BOOL_VALUE: u32 = 2;
        pub(crate) const INT_VALUE: u32 = 3;
        pub(crate) const DOUBLE_VALUE: u32 = 4;
        pub(crate) const ARRAY_VALUE: u32 = 5;
    }
    pub(super) mod array_value {
        pub(crate) const VALUES: u32 = 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use prost::Message as _;

    use super::SpanBatch;

    /// The reference: the request the transform builds, as prost encodes it.
    fn transformed(batch: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    /// The encoder's bytes for `batch` decode to the transform's request, are as long as
    /// `encoded_len` says, and are prost's bytes for that request, byte for byte (the same
    /// fields, in the same order, scopes in the same order).
    fn check(batch: Vec<SpanData>, resource: &Resource) {
        let expected = transformed(batch.clone(), resource);
        let encoded = SpanBatch::new(&batch, resource);
        let bytes = encoded.encode_to_vec();
        assert_eq!(encoded.encoded_len(), bytes.len());
        assert_eq!(
            ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(),
            expected
        );
        assert_eq!(bytes, expected.encode_to_vec());
    }

    /// Empty, ASCII, and any printable text.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z._/]{1,12}", "\\PC{0,12}"]
    }

    /// Any double but NaN, which is not equal to itself, so that decoded requests compare
    /// (`nan_is_encoded_bit_for_bit` covers it).
    fn double() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(-0.0),
            Just(f64::INFINITY),
            any::<f64>().prop_filter("not NaN", |value| !value.is_nan()),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            double().prop_map(Value::F64),
            text().prop_map(|text| Value::String(text.into())),
            text().prop_map(|text| Value::String(StringValue::from(Arc::<str>::from(text)))),
            Just(Value::String(StringValue::from("static"))),
            vec(any::<bool>(), 0..4).prop_map(|values| Value::Array(Array::Bool(values))),
            vec(any::<i64>(), 0..4).prop_map(|values| Value::Array(Array::I64(values))),
            vec(double(), 0..4).prop_map(|values| Value::Array(Array::F64(values))),
            vec(text(), 0..4).prop_map(|values| {
                Value::Array(Array::String(
                    values.into_iter().map(StringValue::from).collect(),
                ))
            }),
        ]
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        vec(
            (text(), value()).prop_map(|(key, value)| KeyValue::new(key, value)),
            0..4,
        )
    }

    /// Mostly none dropped, sometimes any count.
    fn dropped() -> impl Strategy<Value = u32> {
        prop_oneof![3 => Just(0_u32), 1 => any::<u32>()]
    }

    /// At the epoch, before it (sent as 0) or any time after it.
    fn time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            Just(UNIX_EPOCH),
            (1_u64..1_000_000).prop_map(|secs| UNIX_EPOCH - Duration::from_secs(secs)),
            any::<u64>().prop_map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos)),
        ]
    }

    fn trace_state() -> impl Strategy<Value = TraceState> {
        prop_oneof![
            Just(TraceState::NONE),
            vec(("[a-z][a-z0-9_]{0,5}", "[a-zA-Z0-9]{1,6}"), 1..3)
                .prop_filter_map("a valid trace state", |entries| {
                    TraceState::from_key_value(entries).ok()
                }),
        ]
    }

    /// Any ids, flags and trace state; remote or local.
    fn span_context() -> impl Strategy<Value = SpanContext> {
        (
            any::<u128>(),
            any::<u64>(),
            any::<u8>(),
            any::<bool>(),
            trace_state(),
        )
            .prop_map(|(trace_id, span_id, flags, is_remote, trace_state)| {
                SpanContext::new(
                    TraceId::from(trace_id),
                    SpanId::from(span_id),
                    TraceFlags::new(flags),
                    is_remote,
                    trace_state,
                )
            })
    }

    fn scope() -> impl Strategy<Value = InstrumentationScope> {
        (text(), option::of(text()), option::of(text()), attributes()).prop_map(
            |(name, version, schema_url, attributes)| {
                let mut scope = InstrumentationScope::builder(name).with_attributes(attributes);
                if let Some(version) = version {
                    scope = scope.with_version(version);
                }
                if let Some(schema_url) = schema_url {
                    scope = scope.with_schema_url(schema_url);
                }
                scope.build()
            },
        )
    }

    /// `scope` with its attributes in reverse order: the same scope to `==`.
    fn reversed(scope: &InstrumentationScope) -> InstrumentationScope {
        let mut attributes: Vec<KeyValue> = scope.attributes().cloned().collect();
        attributes.reverse();
        let mut twin =
            InstrumentationScope::builder(scope.name().to_owned()).with_attributes(attributes);
        if let Some(version) = scope.version() {
            twin = twin.with_version(version.to_owned());
        }
        if let Some(schema_url) = scope.schema_url() {
            twin = twin.with_schema_url(schema_url.to_owned());
        }
        twin.build()
    }

    fn kind() -> impl Strategy<Value = SpanKind> {
        prop_oneof![
            Just(SpanKind::Client),
            Just(SpanKind::Server),
            Just(SpanKind::Producer),
            Just(SpanKind::Consumer),
            Just(SpanKind::Internal),
        ]
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Unset),
            Just(Status::Ok),
            text().prop_map(Status::error),
        ]
    }

    /// A span of one of `scopes`, with everything the transform reads set at random.
    fn span_data(scopes: Vec<InstrumentationScope>) -> impl Strategy<Value = SpanData> {
        let event = (text(), time(), attributes(), dropped()).prop_map(
            |(name, time, attributes, dropped)| Event::new(name, time, attributes, dropped),
        );
        let link = (span_context(), attributes(), dropped())
            .prop_map(|(context, attributes, dropped)| Link::new(context, attributes, dropped));
        let parent = prop_oneof![Just(SpanId::INVALID), any::<u64>().prop_map(SpanId::from)];
        (
            (span_context(), parent, any::<bool>(), kind(), text()),
            (time(), time(), attributes(), dropped()),
            (vec(event, 0..3), dropped(), vec(link, 0..3), dropped()),
            (status(), any::<Index>()),
        )
            .prop_map(
                move |(
                    (span_context, parent_span_id, parent_span_is_remote, span_kind, name),
                    (start_time, end_time, attributes, dropped_attributes_count),
                    (events, dropped_events, links, dropped_links),
                    (status, scope),
                )| {
                    let mut span_events = SpanEvents::default();
                    span_events.events = events;
                    span_events.dropped_count = dropped_events;
                    let mut span_links = SpanLinks::default();
                    span_links.links = links;
                    span_links.dropped_count = dropped_links;
                    SpanData {
                        span_context,
                        parent_span_id,
                        parent_span_is_remote,
                        span_kind,
                        name: name.into(),
                        start_time,
                        end_time,
                        attributes,
                        dropped_attributes_count,
                        events: span_events,
                        links: span_links,
                        status,
                        instrumentation_scope: scopes[scope.index(scopes.len())].clone(),
                    }
                },
            )
    }

    /// Up to eight spans of up to four scopes, one of which is another's twin
    /// ([`reversed`]), interleaved.
    fn batch() -> impl Strategy<Value = Vec<SpanData>> {
        vec(scope(), 1..4).prop_flat_map(|mut scopes| {
            scopes.push(reversed(&scopes[0]));
            vec(span_data(scopes), 0..8)
        })
    }

    /// Attributes and a schema URL, each empty or not.
    fn resource() -> impl Strategy<Value = Resource> {
        (vec(("[a-z.]{1,10}", value()), 0..4), option::of(text())).prop_map(
            |(attributes, schema_url)| {
                let attributes = attributes
                    .into_iter()
                    .map(|(key, value)| KeyValue::new(key, value));
                match schema_url {
                    Some(schema_url) => Resource::builder_empty()
                        .with_schema_url(attributes, schema_url)
                        .build(),
                    None => Resource::builder_empty()
                        .with_attributes(attributes)
                        .build(),
                }
            },
        )
    }

    proptest! {
        #[test]
        fn encodes_as_the_transform_then_prost(batch in batch(), resource in resource()) {
            check(batch, &resource);
        }
    }

    fn plain_span(id: u64, scope: InstrumentationScope) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "span".into(),
            start_time: UNIX_EPOCH + Duration::from_secs(1),
            end_time: UNIX_EPOCH + Duration::from_secs(2),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope,
        }
    }

    /// Lengths of one, two and three bytes, nested in one another: a value of 20 000
    /// bytes inside a span inside a scope's spans, beside spans of a few hundred bytes.
    #[test]
    fn long_messages_get_their_whole_length_in_front() {
        let scope = InstrumentationScope::builder("long").build();
        let mut batch: Vec<SpanData> = (1..=300)
            .map(|id| {
                let mut span = plain_span(id, scope.clone());
                span.attributes = vec![KeyValue::new("text", "x".repeat(id as usize))];
                span
            })
            .collect();
        batch[7]
            .attributes
            .push(KeyValue::new("huge", "y".repeat(20_000)));
        let encoded = SpanBatch::new(&batch, &Resource::builder_empty().build());
        assert!(encoded.encoded_len() > 1 << 14, "{}", encoded.encoded_len());
        check(
            batch,
            &Resource::builder().with_service_name("long").build(),
        );
    }

    #[test]
    fn an_empty_batch_is_the_resource_with_no_scopes() {
        let resource = Resource::builder().with_service_name("taskman").build();
        check(Vec::new(), &resource);
        check(Vec::new(), &Resource::builder_empty().build());
    }

    /// NaN values are sent bit for bit, and a scope with a NaN attribute, never `==` to
    /// itself, gets a group per span, as in the transform's `HashMap`.
    #[test]
    fn nan_is_encoded_bit_for_bit() {
        let nan = InstrumentationScope::builder("nan")
            .with_attributes([KeyValue::new("x", f64::NAN)])
            .build();
        let mut spans = vec![plain_span(1, nan.clone()), plain_span(2, nan)];
        spans[0].attributes = vec![
            KeyValue::new("nan", f64::NAN),
            KeyValue::new("nans", Value::Array(Array::F64(vec![f64::NAN, -f64::NAN]))),
        ];
        let resource = Resource::builder_empty().build();
        let expected = transformed(spans.clone(), &resource);
        assert_eq!(expected.resource_spans[0].scope_spans.len(), 2);
        let encoded = SpanBatch::new(&spans, &resource);
        assert_eq!(encoded.encode_to_vec(), expected.encode_to_vec());
    }

    #[test]
    fn it_refuses_to_be_decoded_and_clears_to_the_empty_message() {
        let scope = InstrumentationScope::builder("bench").build();
        let mut batch = SpanBatch::new(&[plain_span(1, scope)], &Resource::builder_empty().build());
        let bytes = batch.encode_to_vec();
        let err = batch.merge(bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("only ever encoded"), "{err}");

        batch.clear();
        assert_eq!(batch.encoded_len(), 0);
        assert!(batch.encode_to_vec().is_empty());
        assert!(format!("{batch:?}").contains("spans: 0"));
    }
}
