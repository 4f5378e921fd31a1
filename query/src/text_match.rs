//! `text_match(column, 'query')`: full-text search as a SQL predicate.
//!
//! The query language is small and the same everywhere weft takes a search:
//! words match whole tokens, case-insensitively (`timeout`); `"connection
//! refused"` matches the words next to each other; `AND`, `OR`, `NOT` and
//! parentheses combine them, and words side by side are joined with `AND`.
//!
//! Text is split into tokens the way the full-text index splits it (tantivy's
//! default tokenizer: runs of letters and digits, lowercased), so the two ways
//! of answering agree:
//! - the table provider turns the query into a tantivy query over a segment's
//!   index and reads only the rows it returns (see `provider.rs`);
//! - the function itself evaluates the query on the text, for rows no index
//!   covers (data not yet flushed) and as the exact check of the index's hits.
//!
//! On a `map<text, text>` column (`attributes`) the query is evaluated on each
//! value on its own: a phrase must be inside one value.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use tantivy::query::{AllQuery, BooleanQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{TextAnalyzer, TokenizerManager};
use tantivy::Term;

/// The SQL name of the function.
pub const NAME: &str = "text_match";

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextQuery {
    /// One token.
    Term(String),
    /// Tokens next to each other, in order (at least two).
    Phrase(Vec<String>),
    And(Vec<TextQuery>),
    Or(Vec<TextQuery>),
    Not(Box<TextQuery>),
}

/// Why a search query could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid search query {query:?}: {reason}")]
pub struct ParseError {
    pub query: String,
    pub reason: String,
}

fn analyzer() -> TextAnalyzer {
    TokenizerManager::default()
        .get("default")
        .expect("tantivy has a default tokenizer")
}

/// Splits `text` into the tokens the full-text index holds for it.
fn tokens(analyzer: &mut TextAnalyzer, text: &str, out: &mut Vec<String>) {
    out.clear();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
}

impl TextQuery {
    /// Whether the query negates anywhere (`NOT`): such a query can match
    /// text that lacks a word, so an index that joined several values into one
    /// document may hide matches.
    pub fn negates(&self) -> bool {
        match self {
            TextQuery::Term(_) | TextQuery::Phrase(_) => false,
            TextQuery::And(all) | TextQuery::Or(all) => all.iter().any(TextQuery::negates),
            TextQuery::Not(_) => true,
        }
    }

    /// Parses a search query. An empty query, an unclosed quote or
    /// parenthesis, or an operator without an operand is an error.
    pub fn parse(query: &str) -> Result<Self, ParseError> {
        let fail = |reason: &str| ParseError {
            query: query.to_string(),
            reason: reason.to_string(),
        };
        let lexemes = lex(query).map_err(|r| fail(&r))?;
        let mut parser = Parser {
            lexemes,
            pos: 0,
            analyzer: analyzer(),
        };
        let parsed = parser.or().map_err(|r| fail(&r))?;
        match (parsed, parser.lexemes.get(parser.pos)) {
            (_, Some(Lexeme::Close)) => Err(fail("unmatched ')'")),
            (Some(query), None) => Ok(query),
            (None, _) => Err(fail("the query has no words to search for")),
            (Some(_), Some(_)) => Err(fail("unexpected input after the query")),
        }
    }

    fn matches_tokens(&self, tokens: &[String]) -> bool {
        match self {
            TextQuery::Term(term) => tokens.iter().any(|t| t == term),
            TextQuery::Phrase(phrase) => tokens.windows(phrase.len()).any(|w| w == phrase),
            TextQuery::And(all) => all.iter().all(|q| q.matches_tokens(tokens)),
            TextQuery::Or(any) => any.iter().any(|q| q.matches_tokens(tokens)),
            TextQuery::Not(q) => !q.matches_tokens(tokens),
        }
    }

    /// The tantivy query that finds (at least) the matching documents of an
    /// index `field`. Without positions (`positions == false`) a phrase is
    /// looked up as all of its words, a superset the exact check narrows.
    pub fn to_tantivy(&self, field: Field, positions: bool) -> Box<dyn Query> {
        let term = |t: &str| Term::from_field_text(field, t);
        match self {
            TextQuery::Term(t) => Box::new(TermQuery::new(term(t), IndexRecordOption::Basic)),
            TextQuery::Phrase(words) if positions => {
                Box::new(PhraseQuery::new(words.iter().map(|w| term(w)).collect()))
            }
            TextQuery::Phrase(words) => Box::new(BooleanQuery::new(
                words
                    .iter()
                    .map(|w| {
                        let q: Box<dyn Query> =
                            Box::new(TermQuery::new(term(w), IndexRecordOption::Basic));
                        (Occur::Must, q)
                    })
                    .collect(),
            )),
            TextQuery::And(all) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = all
                    .iter()
                    .map(|q| match q {
                        TextQuery::Not(inner) => {
                            (Occur::MustNot, inner.to_tantivy(field, positions))
                        }
                        q => (Occur::Must, q.to_tantivy(field, positions)),
                    })
                    .collect();
                if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            TextQuery::Or(any) => Box::new(BooleanQuery::new(
                any.iter()
                    .map(|q| (Occur::Should, q.to_tantivy(field, positions)))
                    .collect(),
            )),
            TextQuery::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, inner.to_tantivy(field, positions)),
            ])),
        }
    }
}

/// Evaluates parsed queries on text, reusing its tokenizer and buffers.
pub struct Matcher {
    query: TextQuery,
    analyzer: TextAnalyzer,
    scratch: Vec<String>,
}

impl Matcher {
    pub fn new(query: TextQuery) -> Self {
        Self {
            query,
            analyzer: analyzer(),
            scratch: Vec::new(),
        }
    }

    pub fn matches(&mut self, text: &str) -> bool {
        tokens(&mut self.analyzer, text, &mut self.scratch);
        self.query.matches_tokens(&self.scratch)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Lexeme {
    Word(String),
    Quoted(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn lex(query: &str) -> Result<Vec<Lexeme>, String> {
    let mut lexemes = Vec::new();
    let mut chars = query.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                lexemes.push(Lexeme::Open);
            }
            ')' => {
                chars.next();
                lexemes.push(Lexeme::Close);
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, c)) => phrase.push(c),
                        None => return Err(format!("unclosed quote at offset {start}")),
                    }
                }
                lexemes.push(Lexeme::Quoted(phrase));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                lexemes.push(match word.as_str() {
                    "AND" => Lexeme::And,
                    "OR" => Lexeme::Or,
                    "NOT" => Lexeme::Not,
                    _ => Lexeme::Word(word),
                });
            }
        }
    }
    Ok(lexemes)
}

struct Parser {
    lexemes: Vec<Lexeme>,
    pos: usize,
    analyzer: TextAnalyzer,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.pos)
    }

    /// `or := and ("OR" and)*`
    fn or(&mut self) -> Result<Option<TextQuery>, String> {
        let mut any = Vec::new();
        loop {
            match self.and()? {
                Some(q) => any.push(q),
                None if any.is_empty() && self.peek() != Some(&Lexeme::Or) => return Ok(None),
                None => return Err("OR needs a query on both sides".into()),
            }
            if self.peek() != Some(&Lexeme::Or) {
                break;
            }
            self.pos += 1;
        }
        Ok(Some(flatten(any, TextQuery::Or)))
    }

    /// `and := unary (["AND"] unary)*`
    fn and(&mut self) -> Result<Option<TextQuery>, String> {
        let mut all = Vec::new();
        loop {
            let explicit = self.peek() == Some(&Lexeme::And);
            if explicit {
                if all.is_empty() {
                    return Err("AND needs a query on both sides".into());
                }
                self.pos += 1;
            }
            match self.unary()? {
                Some(q) => all.push(q),
                None if explicit => return Err("AND needs a query on both sides".into()),
                None => break,
            }
        }
        Ok((!all.is_empty()).then(|| flatten(all, TextQuery::And)))
    }

    /// `unary := "NOT" unary | "(" or ")" | word | "phrase"`; words without
    /// letters or digits (`-`) are skipped, as the index skips them.
    fn unary(&mut self) -> Result<Option<TextQuery>, String> {
        loop {
            let Some(lexeme) = self.peek().cloned() else {
                return Ok(None);
            };
            match lexeme {
                Lexeme::Not => {
                    self.pos += 1;
                    return match self.unary()? {
                        Some(q) => Ok(Some(TextQuery::Not(Box::new(q)))),
                        None => Err("NOT needs a query after it".into()),
                    };
                }
                Lexeme::Open => {
                    self.pos += 1;
                    let inner = self.or()?;
                    if self.peek() != Some(&Lexeme::Close) {
                        return Err("unclosed '('".into());
                    }
                    self.pos += 1;
                    return match inner {
                        Some(q) => Ok(Some(q)),
                        None => Err("empty parentheses".into()),
                    };
                }
                Lexeme::Word(text) | Lexeme::Quoted(text) => {
                    self.pos += 1;
                    let mut words = Vec::new();
                    tokens(&mut self.analyzer, &text, &mut words);
                    match words.len() {
                        0 => continue,
                        1 => return Ok(words.pop().map(TextQuery::Term)),
                        // `crm-database` is the tokens crm, database next to
                        // each other, as in the indexed text.
                        _ => return Ok(Some(TextQuery::Phrase(words))),
                    }
                }
                Lexeme::And | Lexeme::Or | Lexeme::Close => return Ok(None),
            }
        }
    }
}

fn flatten(mut parts: Vec<TextQuery>, combine: fn(Vec<TextQuery>) -> TextQuery) -> TextQuery {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        combine(parts)
    }
}

/// A `text_match(column, query)` call on a column of the scanned table, as
/// the table provider sees it among its filters.
pub struct TextMatchFilter {
    pub column: String,
    pub query: TextQuery,
}

impl TextMatchFilter {
    /// Recognizes `text_match(<column>, '<literal>')`.
    pub fn from_expr(expr: &Expr) -> Option<Result<Self, ParseError>> {
        let Expr::ScalarFunction(call) = expr else {
            return None;
        };
        if call.func.name() != NAME {
            return None;
        }
        let [Expr::Column(column), Expr::Literal(ScalarValue::Utf8(Some(query)), _)] =
            call.args.as_slice()
        else {
            return None;
        };
        Some(TextQuery::parse(query).map(|query| Self {
            column: column.name.clone(),
            query,
        }))
    }
}

/// The `text_match` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextMatchUdf {
    signature: Signature,
}

impl TextMatchUdf {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for TextMatchUdf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Map(..) | DataType::Null, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View] => {
                Ok(DataType::Boolean)
            }
            _ => plan_err!(
                "text_match(column, query) takes a text or map<text, text> column and a text query, got ({})",
                arg_types
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [text, query] = args.args.as_slice() else {
            return exec_err!("text_match takes two arguments");
        };
        let query = match query {
            ColumnarValue::Scalar(value) => match value.try_as_str() {
                Some(Some(query)) => query.to_string(),
                _ => return exec_err!("text_match's query must be a non-null text literal"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("text_match's query must be a text literal, not a column")
            }
        };
        let query = TextQuery::parse(&query)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let mut matcher = Matcher::new(query);
        let array = text.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(match_array(
            &mut matcher,
            &array,
        )?)))
    }
}

fn match_array(matcher: &mut Matcher, array: &ArrayRef) -> DfResult<BooleanArray> {
    let mut out = BooleanBuilder::with_capacity(array.len());
    match array.data_type() {
        DataType::Map(..) => {
            let map = array.as_map();
            let values = arrow::compute::cast(map.values(), &DataType::Utf8)?;
            let values = values.as_string::<i32>();
            for row in 0..map.len() {
                if map.is_null(row) {
                    out.append_null();
                    continue;
                }
                let offsets = map.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let hit =
                    (start..end).any(|i| values.is_valid(i) && matcher.matches(values.value(i)));
                out.append_value(hit);
            }
        }
        DataType::Null => out.append_nulls(array.len()),
        _ => {
            let text = arrow::compute::cast(array, &DataType::Utf8)?;
            for value in text.as_string::<i32>() {
                out.append_option(value.map(|v| matcher.matches(v)));
            }
        }
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(query: &str, text: &str) -> bool {
        Matcher::new(TextQuery::parse(query).unwrap()).matches(text)
    }

    #[test]
    fn words_match_whole_tokens_in_any_case_and_side_by_side_words_all_must_match() {
        assert!(matches("timeout", "upstream Timeout after 30s"));
        assert!(!matches("time", "upstream timeout"));
        assert!(matches("timeout conductor", "crm-conductor: timeout"));
        assert!(!matches("timeout conductor", "timeout in database"));
    }

    #[test]
    fn operators_and_parentheses_combine_queries() {
        assert!(matches("timeout AND conductor", "conductor timeout"));
        assert!(matches("timeout OR refused", "connection refused"));
        assert!(matches("error AND NOT retry", "fatal error"));
        assert!(!matches("error AND NOT retry", "error, will retry"));
        assert!(matches("(a OR b) AND c", "b c"));
        assert!(!matches("(a OR b) AND c", "a b"));
        assert!(matches("NOT debug", "info line"));
    }

    #[test]
    fn a_query_negates_if_any_part_of_it_does() {
        for (query, negates) in [
            ("timeout", false),
            ("\"slow query\" OR timeout", false),
            ("NOT sqlite", true),
            ("accounts AND NOT services", true),
            ("(a OR (b AND NOT c))", true),
        ] {
            assert_eq!(
                TextQuery::parse(query).unwrap().negates(),
                negates,
                "{query}"
            );
        }
    }

    #[test]
    fn phrases_and_hyphenated_words_need_their_words_in_order() {
        assert!(matches(
            "\"connection refused\"",
            "error: Connection refused by peer"
        ));
        assert!(!matches("\"connection refused\"", "refused connection"));
        assert!(matches("crm-database", "calling crm-database now"));
        assert!(!matches("crm-database", "database of crm"));
    }

    #[test]
    fn malformed_queries_are_errors_that_say_what_is_wrong() {
        for (query, reason) in [
            ("", "no words"),
            ("  - ", "no words"),
            ("\"open", "unclosed quote"),
            ("(a OR b", "unclosed '('"),
            ("a)", "unmatched ')'"),
            ("a AND", "AND needs"),
            ("OR a", "OR needs"),
            ("NOT", "NOT needs"),
            ("()", "empty parentheses"),
        ] {
            let err = TextQuery::parse(query).unwrap_err().to_string();
            assert!(err.contains(reason), "{query:?}: {err}");
        }
    }
}
