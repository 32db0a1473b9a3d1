//! A well-formedness check of XML (the SVG outputs), std only.

// ---------------------------------------------------------------------------------------------
// XML

/// Checks that `text` is well-formed enough to be XML: one root element, every tag closed in
/// order, comments, CDATA, processing instructions and the doctype closed. Not a validator:
/// it catches the truncated, unescaped or mis-nested output a renderer bug produces.
pub fn check_xml(text: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = text;
    let mut at = 0usize;
    while let Some(lt) = rest.find('<') {
        let (between, tail) = rest.split_at(lt);
        if open.is_empty() && !between.trim().is_empty() {
            return Err(format!("text outside the root element at byte {at}"));
        }
        at += lt;
        let (skip, kind) = if tail.starts_with("<!--") {
            (tail.find("-->").map(|i| i + 3), "comment")
        } else if tail.starts_with("<![CDATA[") {
            (tail.find("]]>").map(|i| i + 3), "CDATA section")
        } else if tail.starts_with("<?") {
            (tail.find("?>").map(|i| i + 2), "processing instruction")
        } else if tail.starts_with("<!") {
            (tail.find('>').map(|i| i + 1), "declaration")
        } else {
            let end = tag_end(tail).ok_or_else(|| format!("unclosed tag at byte {at}"))?;
            let tag = &tail[1..end];
            if let Some(closing) = tag.strip_prefix('/') {
                let name = closing.trim();
                match open.pop() {
                    Some(expected) if expected == name => {}
                    Some(expected) => return Err(format!("</{name}> at byte {at} closes <{expected}>")),
                    None => return Err(format!("</{name}> at byte {at} closes nothing")),
                }
            } else {
                let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("a tag without a name at byte {at}"));
                }
                if open.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            (Some(end + 1), "tag")
        };
        let skip = skip.ok_or_else(|| format!("unclosed {kind} at byte {at}"))?;
        rest = &tail[skip..];
        at += skip;
    }
    if !open.is_empty() {
        return Err(format!("unclosed elements at the end: {}", open.join(" > ")));
    }
    if !rest.trim().is_empty() {
        return Err("text after the root element".into());
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

/// The `>` that ends the tag starting at `tail[0]`, skipping quoted attribute values.
pub(crate) fn tag_end(tail: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in tail.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// The text of the first element with `id="ID"` (inferno's `title` and `subtitle`), unescaped.
pub fn svg_text_by_id(svg: &str, id: &str) -> Option<String> {
    let start = svg.find(&format!("id=\"{id}\""))?;
    let open_end = start + svg[start..].find('>')? + 1;
    let close = open_end + svg[open_end..].find('<')?;
    Some(unescape_xml(&svg[open_end..close]))
}

pub fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
