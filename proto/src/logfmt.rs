//! logfmt, as in Heroku router lines: borrowed key/value pairs and numeric comparisons.

/// Iterator over `key=value` pairs of a line.
pub fn pairs(input: &[u8]) -> Pairs<'_> {
    Pairs { rest: input }
}

pub struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let _ = self.rest;
        todo!()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    /// The raw value without quotes; escapes still present when `quoted`.
    pub raw: &'a [u8],
    pub quoted: bool,
}
