// Package payloadtest holds the awkward JSON that Herald's tests publish by
// every path and read back by every reader: JSON whose numbers, escapes,
// characters or key order a decoder to google.protobuf.Value (or to
// float64) would change. Each case has the text a publisher sends and the
// text every reader must get: the same tokens, without insignificant
// whitespace.
package payloadtest

import "strings"

// Case is one JSON payload: In as published, Want as read.
type Case struct {
	Name string
	In   string
	Want string
}

// Corpus is the awkward JSON every path must carry exactly.
var Corpus = []Case{
	{"big-integer", `{"id":12345678901234567891}`, `{"id":12345678901234567891}`},
	{"big-negative", `-12345678901234567891`, `-12345678901234567891`},
	{"issue-example", `{"id":12345678901234567891,"b":1,"a":"x"}`, `{"id":12345678901234567891,"b":1,"a":"x"}`},
	{"one-point-zero", `[1.0,1,1.50,100e0,0.1e1]`, `[1.0,1,1.50,100e0,0.1e1]`},
	{"negative-zero", `{"z":-0,"f":-0.0,"e":-0e0}`, `{"z":-0,"f":-0.0,"e":-0e0}`},
	{"exponents", `[1e400,1E-7,-2.5e+10,1e-400,6.02214076E23]`, `[1e400,1E-7,-2.5e+10,1e-400,6.02214076E23]`},
	{"unicode-escapes", `{"e":"\u00e9","smile":"\ud83d\ude00","lone":"\udc00","nul":"\u0000","slash":"\/"}`, `{"e":"\u00e9","smile":"\ud83d\ude00","lone":"\udc00","nul":"\u0000","slash":"\/"}`},
	{"astral-raw", `{"s":"😀 ☃ é 𝄞"}`, `{"s":"😀 ☃ é 𝄞"}`},
	{"key-order", `{"b":1,"a":2}`, `{"b":1,"a":2}`},
	{"duplicate-looking-keys", `{"a":1,"\u0061":2,"A":3,"a ":4}`, `{"a":1,"\u0061":2,"A":3,"a ":4}`},
	{"deep-arrays", strings.Repeat("[", 500) + "1" + strings.Repeat("]", 500), strings.Repeat("[", 500) + "1" + strings.Repeat("]", 500)},
	{"deep-objects", strings.Repeat(`{"k":`, 500) + "null" + strings.Repeat("}", 500), strings.Repeat(`{"k":`, 500) + "null" + strings.Repeat("}", 500)},
	{"empty-object", `{}`, `{}`},
	{"empty-array", `[]`, `[]`},
	{"empty-string", `""`, `""`},
	{"newline-and-u2028", "{\"t\":\"line1\\nline2\",\"ls\":\"a\\u2028b\",\"raw\":\"a\u2028b\u2029c\"}", "{\"t\":\"line1\\nline2\",\"ls\":\"a\\u2028b\",\"raw\":\"a\u2028b\u2029c\"}"},
	{"whitespace", "{\n  \"a\" : [ 1 , 2 ] ,\n\t\"b\" : \"x  y\" ,\r\n \"c\":{ }\n}\n", `{"a":[1,2],"b":"x  y","c":{}}`},
	{"escaped-quotes", `{"q":"say \"hi\" \\ \\\" "}`, `{"q":"say \"hi\" \\ \\\" "}`},
	{"null", `null`, `null`},
	{"true", ` true `, `true`},
	{"string", `"str"`, `"str"`},
	{"decimal", `12.5`, `12.5`},
}

// Invalid is text that must be refused on every publish path: not UTF-8,
// or not JSON.
var Invalid = []Case{
	{Name: "invalid-utf8", In: "{\"a\":\"\xff\"}"},
	{Name: "overlong-utf8", In: "\"\xc0\xaf\""},
	{Name: "utf8-surrogate", In: "\"\xed\xa0\x80\""},
	{Name: "truncated-utf8", In: "[\"\xe2\x82\"]"},
	{Name: "not-json", In: `{"a":}`},
	{Name: "single-quotes", In: `{'a':1}`},
	{Name: "nan", In: `NaN`},
	{Name: "two-values", In: `{} {}`},
	{Name: "empty", In: ``},
	{Name: "control-char-in-string", In: "\"a\nb\""},
}
