//! The label sets of every metric family, and the shared label values: bounded cardinality
//! (route templates, configured models or `other`, configured teams, fixed error kinds).

use std::sync::{Arc, LazyLock};

use axum::extract::MatchedPath;
use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A label value shared between series and requests: cloning it is a reference count.
pub type Label = Arc<str>;

/// `""`: no model or team (open mode), made once.
pub fn empty_label() -> Label {
    static EMPTY: LazyLock<Label> = LazyLock::new(|| "".into());
    EMPTY.clone()
}

/// `other`: a model the config does not name, made once.
pub fn other_label() -> Label {
    static OTHER: LazyLock<Label> = LazyLock::new(|| "other".into());
    OTHER.clone()
}

/// The route label: the router's matched template, e.g. `/v1/streams/{id}/events`.
#[derive(Debug, Clone)]
pub struct Route(Option<MatchedPath>);

impl Route {
    pub fn new(matched: Option<&MatchedPath>) -> Self {
        Self(matched.cloned())
    }

    pub fn as_str(&self) -> &str {
        // The fallback (404, 405 of unknown paths) has no template: one series for all of it.
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A request method as a label: the ones the API serves, else `other` (methods are free text).
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: Route,
    pub method: &'static str,
    pub status: u16,
    /// Set for chat completions and stream creation, empty otherwise.
    pub model: Label,
    pub team: Label,
}

/// What a chat handler tells the HTTP counter about its request: put into the response's
/// extensions, read by the counting layer (see `crate::app`).
#[derive(Debug, Clone)]
pub struct RequestLabels {
    pub model: Label,
    pub team: Label,
}

/// One generation's labels, made once when it is admitted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub model: Label,
    pub provider: Label,
    pub team: Label,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FailedLabels {
    pub(super) model: Label,
    pub(super) provider: Label,
    pub(super) team: Label,
    pub(super) error_type: &'static str,
}

/// Histograms leave the team out: latency is the model's and provider's, and buckets times
/// teams would multiply series for nothing.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModelLabels {
    pub(super) model: Label,
    pub(super) provider: Label,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TokenLabels {
    pub(super) model: Label,
    pub(super) team: Label,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamErrorLabels {
    pub(super) provider: Label,
    pub(super) kind: &'static str,
    /// The upstream's HTTP status for `upstream_http`, empty for the other kinds.
    pub(super) status: Option<u16>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProviderLabels {
    pub(super) provider: Label,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FailoverLabels {
    pub(super) from: Label,
    pub(super) to: Label,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PhaseLabels {
    pub(super) phase: &'static str,
}
