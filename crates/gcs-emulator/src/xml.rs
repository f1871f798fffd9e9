//! The XML bodies of the GCS XML API: listings, multipart results and errors.

use std::fmt::Write;

use chrono::SecondsFormat;
use quick_xml::escape::escape;
use serde::Deserialize;

use crate::store::Object;

const DECLARATION: &str = "<?xml version='1.0' encoding='UTF-8'?>";

/// `<Error>` with GCS's code and message.
pub fn error(code: &str, message: &str) -> String {
    format!(
        "{DECLARATION}<Error><Code>{}</Code><Message>{}</Message></Error>",
        escape(code),
        escape(message)
    )
}

/// One page of a `list-type=2` listing.
pub struct ListPage<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    pub max_keys: usize,
    pub objects: Vec<(&'a str, &'a Object)>,
    pub prefixes: Vec<String>,
    pub next_token: Option<String>,
}

impl ListPage<'_> {
    pub fn to_xml(&self) -> String {
        let mut out = format!(
            "{DECLARATION}<ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01\">\
             <Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{}</MaxKeys>",
            escape(self.bucket),
            escape(self.prefix),
            self.objects.len() + self.prefixes.len(),
            self.max_keys,
        );
        if let Some(d) = self.delimiter {
            let _ = write!(out, "<Delimiter>{}</Delimiter>", escape(d));
        }
        let _ = write!(
            out,
            "<IsTruncated>{}</IsTruncated>",
            self.next_token.is_some()
        );
        for (key, o) in &self.objects {
            let _ = write!(
                out,
                "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>1</MetaGeneration>\
                 <LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                escape(*key),
                o.generation,
                o.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
                escape(&o.etag),
                o.data.len()
            );
        }
        for p in &self.prefixes {
            let _ = write!(
                out,
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                escape(p)
            );
        }
        if let Some(t) = &self.next_token {
            let _ = write!(
                out,
                "<NextContinuationToken>{}</NextContinuationToken>",
                escape(t)
            );
        }
        out.push_str("</ListBucketResult>");
        out
    }
}

pub fn initiate_result(bucket: &str, key: &str, upload_id: &str) -> String {
    format!(
        "{DECLARATION}<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        escape(bucket),
        escape(key),
        escape(upload_id)
    )
}

pub fn complete_result(base_url: &str, bucket: &str, key: &str, etag: &str) -> String {
    format!(
        "{DECLARATION}<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Location>{base}/{b}/{k}</Location><Bucket>{b}</Bucket><Key>{k}</Key><ETag>{e}</ETag>\
         </CompleteMultipartUploadResult>",
        base = escape(base_url),
        b = escape(bucket),
        k = escape(key),
        e = escape(etag)
    )
}

pub fn copy_result(object: &Object) -> String {
    format!(
        "{DECLARATION}<CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        object.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
        escape(&object.etag)
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CompleteMultipartUpload {
    #[serde(default)]
    part: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

/// The `(PartNumber, ETag)` pairs of a `CompleteMultipartUpload` body, in order.
pub fn parse_complete(body: &str) -> Result<Vec<(u32, String)>, String> {
    let parsed: CompleteMultipartUpload =
        quick_xml::de::from_str(body).map_err(|e| e.to_string())?;
    Ok(parsed
        .part
        .into_iter()
        .map(|p| (p.number, p.etag))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_bodies_are_read_in_order() {
        let body = r#"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>"b"</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete(body).unwrap(),
            [(1, "\"a\"".to_string()), (2, "\"b\"".to_string())]
        );
        assert!(parse_complete("<nope").is_err());
    }
}
