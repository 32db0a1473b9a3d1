//! What a rendered profile says about itself, for every format.

/// What a rendered profile says about itself.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub title: String,
    /// One line under the title: window, rate, samples; and PARTIAL when it is.
    pub subtitle: String,
}
