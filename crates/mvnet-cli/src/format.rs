//! Docker's `--format`: `json`, a Go template (`'{{.Name}}'`, `'{{json .IPAM.Config}}'`,
//! `'{{range .Containers}}{{.IPv4Address}} {{end}}'`), or `table` + a template, whose
//! header row is made from the fields it names. Templates run through the `gtmpl` crate
//! (Go's text/template for Rust), with Docker's extra functions.

use gtmpl::{Template, Value as Tv};
use gtmpl_value::FuncError;
use serde_json::Value;

use mvnet_core::{invalid, Result};

/// How a listing or an inspect prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The command's own table.
    Default,
    /// One JSON document per object.
    Json,
    /// A template per object, one line each.
    Template(String),
    /// `table TEMPLATE`: a header from the fields, then aligned rows.
    Table(String),
}

impl Format {
    pub fn parse(s: &str) -> Format {
        let t = s.trim();
        match t {
            "" | "table" => Format::Default,
            "json" => Format::Json,
            _ => match t.strip_prefix("table ") {
                Some(rest) => Format::Table(unescape(rest)),
                None => Format::Template(unescape(s)),
            },
        }
    }
}

/// Docker lets `\t` and `\n` be typed literally in a format.
fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

/// serde JSON to the template engine's values.
fn to_tv(v: &Value) -> Tv {
    match v {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Tv::from(i),
            (_, Some(u), _) => Tv::from(u),
            (_, _, Some(f)) => Tv::from(f),
            _ => Tv::Nil,
        },
        Value::String(s) => Tv::String(s.clone()),
        Value::Array(a) => Tv::Array(a.iter().map(to_tv).collect()),
        Value::Object(o) => Tv::Object(o.iter().map(|(k, v)| (k.clone(), to_tv(v))).collect()),
    }
}

fn from_tv(v: &Tv) -> Value {
    match v {
        Tv::Nil | Tv::NoValue => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        Tv::String(s) => Value::String(s.clone()),
        Tv::Array(a) => Value::Array(a.iter().map(from_tv).collect()),
        Tv::Object(o) | Tv::Map(o) => {
            let mut m = serde_json::Map::new();
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            for k in keys {
                m.insert(k.clone(), from_tv(&o[k]));
            }
            Value::Object(m)
        }
        Tv::Function(_) => Value::Null,
    }
}

fn one_arg<'a>(name: &str, args: &'a [Tv]) -> std::result::Result<&'a Tv, FuncError> {
    match args {
        [a] => Ok(a),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn text_of(v: &Tv) -> String {
    match v {
        Tv::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// Docker's template functions (docker/cli templates.basicFunctions).
fn f_json(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    let v = one_arg("json", args)?;
    Ok(Tv::String(from_tv(v).to_string()))
}
fn f_upper(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    Ok(Tv::String(text_of(one_arg("upper", args)?).to_uppercase()))
}
fn f_lower(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    Ok(Tv::String(text_of(one_arg("lower", args)?).to_lowercase()))
}
fn f_title(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    let s = text_of(one_arg("title", args)?);
    let mut c = s.chars();
    Ok(Tv::String(match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }))
}
fn f_join(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    match args {
        [Tv::Array(items), sep] => Ok(Tv::String(
            items
                .iter()
                .map(text_of)
                .collect::<Vec<_>>()
                .join(&text_of(sep)),
        )),
        [_, _] => Err(FuncError::UnableToConvertFromValue),
        _ => Err(FuncError::ExactlyXArgs("join".into(), 2)),
    }
}
fn f_split(args: &[Tv]) -> std::result::Result<Tv, FuncError> {
    match args {
        [s, sep] => Ok(Tv::Array(
            text_of(s)
                .split(&text_of(sep))
                .map(|p| Tv::String(p.to_string()))
                .collect(),
        )),
        _ => Err(FuncError::ExactlyXArgs("split".into(), 2)),
    }
}

/// Renders `template` against one object.
pub fn render(template: &str, obj: &Value) -> Result<String> {
    let mut t = Template::default();
    t.add_funcs(&[
        ("json", f_json as gtmpl_value::Func),
        ("upper", f_upper),
        ("lower", f_lower),
        ("title", f_title),
        ("join", f_join),
        ("split", f_split),
    ]);
    t.parse(template).map_err(|e| {
        invalid!(
            "invalid --format template: {e}; see Docker's --format syntax, e.g. '{{{{.Name}}}}'"
        )
    })?;
    let ctx = gtmpl::Context::from(to_tv(obj));
    t.render(&ctx)
        .map_err(|e| invalid!("--format template failed: {e}"))
}

/// The header of a `table` column: Docker's name for the field, else the field in capitals.
fn header_for(field: &str, headers: &[(&str, &str)]) -> String {
    headers
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| field.to_uppercase())
}

/// The header row of `table TEMPLATE`: each `{{.Field}}` (or `{{json .Field}}`) becomes
/// that field's header.
fn table_header(template: &str, headers: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let action = rest[start + 2..start + end].trim();
        let field = action
            .split_whitespace()
            .find(|w| w.starts_with('.'))
            .map(|w| w.trim_start_matches('.').split('.').next().unwrap_or(""))
            .unwrap_or("");
        out.push_str(&header_for(field, headers));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Prints `objects` in `format` (not `Default`, which the caller prints itself).
/// `headers` maps field names to Docker's column names for `table`.
pub fn print(format: &Format, objects: &[Value], headers: &[(&str, &str)]) -> Result<()> {
    for line in lines(format, objects, headers)? {
        println!("{line}");
    }
    Ok(())
}

/// The lines `print` prints (pure, for tests).
pub fn lines(format: &Format, objects: &[Value], headers: &[(&str, &str)]) -> Result<Vec<String>> {
    match format {
        Format::Default => Ok(Vec::new()),
        Format::Json => Ok(objects.iter().map(|o| o.to_string()).collect()),
        Format::Template(t) => objects.iter().map(|o| render(t, o)).collect(),
        Format::Table(t) => {
            let mut rows: Vec<Vec<String>> = vec![table_header(t, headers)
                .split('\t')
                .map(str::to_string)
                .collect()];
            for o in objects {
                rows.push(render(t, o)?.split('\t').map(str::to_string).collect());
            }
            Ok(align(&rows))
        }
    }
}

/// Columns padded to their widest cell plus three spaces, like Docker's tabwriter.
fn align(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                s.push_str(c);
                if i + 1 < r.len() {
                    s.extend(std::iter::repeat_n(
                        ' ',
                        widths[i].saturating_sub(c.chars().count()) + 3,
                    ));
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> Value {
        json!({
            "Name": "my-macvlan-net", "Id": "8e9ae1c6629d", "Driver": "macvlan",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.103.19.0/24", "Gateway": "10.103.19.1"}]},
            "Containers": {"bb4d": {"Name": "web", "IPv4Address": "10.103.19.2/24"},
                           "cc5e": {"Name": "db", "IPv4Address": "10.103.19.3/24"}},
            "Labels": {"env": "lab"},
        })
    }

    // The examples of Docker's reference pages (network inspect, network ls, ps), run on
    // mvnet's objects.
    #[test]
    fn docker_documented_examples() {
        let n = network();
        assert_eq!(render("{{.Name}}", &n).unwrap(), "my-macvlan-net");
        assert_eq!(
            render("{{json .IPAM.Config}}", &n).unwrap(),
            r#"[{"Gateway":"10.103.19.1","Subnet":"10.103.19.0/24"}]"#
        );
        let ips = render("{{range .Containers}}{{.IPv4Address}} {{end}}", &n).unwrap();
        assert!(
            ips.contains("10.103.19.2/24 ") && ips.contains("10.103.19.3/24 "),
            "{ips}"
        );
        assert_eq!(render("{{.Driver | upper}}", &n).unwrap(), "MACVLAN");
        assert_eq!(render("{{index .Labels \"env\"}}", &n).unwrap(), "lab");
        assert_eq!(
            render("{{range .IPAM.Config}}{{.Subnet}}{{end}}", &n).unwrap(),
            "10.103.19.0/24"
        );
        assert_eq!(
            render("{{join (split .Name \"-\") \"_\"}}", &n).unwrap(),
            "my_macvlan_net"
        );
    }

    #[test]
    fn table_and_json_forms() {
        let rows = vec![
            json!({"ID": "8e9ae1c6629d", "Name": "my-macvlan-net", "Driver": "macvlan"}),
            json!({"ID": "1f2e3d4c5b6a", "Name": "lan", "Driver": "ipvlan"}),
        ];
        let headers = [("ID", "NETWORK ID"), ("Name", "NAME")];
        let out = lines(&Format::parse("table {{.ID}}\\t{{.Name}}"), &rows, &headers).unwrap();
        assert_eq!(
            out,
            [
                "NETWORK ID     NAME",
                "8e9ae1c6629d   my-macvlan-net",
                "1f2e3d4c5b6a   lan"
            ]
        );
        let out = lines(&Format::parse("{{.Name}}: {{.Driver}}"), &rows, &headers).unwrap();
        assert_eq!(out, ["my-macvlan-net: macvlan", "lan: ipvlan"]);
        let out = lines(&Format::parse("json"), &rows, &headers).unwrap();
        assert!(out[0].starts_with('{') && out[0].contains("\"Name\":\"my-macvlan-net\""));
        assert_eq!(Format::parse("table"), Format::Default);
    }

    #[test]
    fn a_bad_template_is_one_clear_error() {
        let e = render("{{.Name", &network()).unwrap_err().to_string();
        assert!(e.contains("invalid --format template"), "{e}");
    }
}
