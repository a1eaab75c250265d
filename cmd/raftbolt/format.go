package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/raft"
)

// writeJSON writes v and a newline, indented or on one line (dump's JSON
// Lines).
func writeJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// isText reports whether b reads as text: valid UTF-8 of printable
// characters and ordinary white space.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

// printable is b as text when it is, else "base64:" and its base64.
func printable(b []byte) string {
	if isText(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTPE"[exp], n)
}

func optUint(v *uint64) string {
	if v == nil {
		return "not set"
	}
	return strconv.FormatUint(*v, 10)
}

func optString(v *string) string {
	if v == nil {
		return "not set"
	}
	return *v
}

type serverJSON struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
}

type configJSON struct {
	Index   uint64       `json:"index"`
	Servers []serverJSON `json:"servers"`
}

func newConfigJSON(index uint64, c raft.Configuration) *configJSON {
	out := &configJSON{Index: index, Servers: []serverJSON{}}
	for _, s := range c.Servers {
		out.Servers = append(out.Servers, serverJSON{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()})
	}
	return out
}

// entryJSON is one line of dump -json. Data and Extensions appear as text
// (data, extensions) when they are printable, else in base64 (data_base64,
// extensions_base64); absent when empty.
type entryJSON struct {
	Index            uint64       `json:"index"`
	Term             uint64       `json:"term"`
	Type             string       `json:"type"`
	AppendedAt       string       `json:"appended_at,omitempty"`
	Data             *string      `json:"data,omitempty"`
	DataBase64       string       `json:"data_base64,omitempty"`
	Extensions       *string      `json:"extensions,omitempty"`
	ExtensionsBase64 string       `json:"extensions_base64,omitempty"`
	Servers          []serverJSON `json:"servers,omitempty"` // a configuration entry's
}

func newEntryJSON(l *raft.Log) entryJSON {
	e := entryJSON{Index: l.Index, Term: l.Term, Type: l.Type.String(), AppendedAt: appendedAt(l.AppendedAt)}
	if len(l.Data) > 0 {
		if isText(l.Data) {
			s := string(l.Data)
			e.Data = &s
		} else {
			e.DataBase64 = base64.StdEncoding.EncodeToString(l.Data)
		}
	}
	if len(l.Extensions) > 0 {
		if isText(l.Extensions) {
			s := string(l.Extensions)
			e.Extensions = &s
		} else {
			e.ExtensionsBase64 = base64.StdEncoding.EncodeToString(l.Extensions)
		}
	}
	if c, ok := entryConfiguration(l); ok {
		e.Servers = newConfigJSON(l.Index, c).Servers
	}
	return e
}

func appendedAt(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// entryConfiguration decodes a LogConfiguration entry; raft's decoder
// panics on bad data, which is then just not shown.
func entryConfiguration(l *raft.Log) (c raft.Configuration, ok bool) {
	if l.Type != raft.LogConfiguration {
		return c, false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return raft.DecodeConfiguration(l.Data), true
}

// writeEntry writes one line of dump's text output:
//
//	index=7 term=2 type=LogCommand appended_at=2025-01-02T03:04:05.6Z data="set x=1"
func writeEntry(w io.Writer, l *raft.Log) {
	var b strings.Builder
	fmt.Fprintf(&b, "index=%d term=%d type=%s", l.Index, l.Term, l.Type)
	if at := appendedAt(l.AppendedAt); at != "" {
		fmt.Fprintf(&b, " appended_at=%s", at)
	} else {
		b.WriteString(" appended_at=-")
	}
	payload(&b, "data", l.Data)
	if len(l.Extensions) > 0 {
		payload(&b, "extensions", l.Extensions)
	}
	if c, ok := entryConfiguration(l); ok {
		b.WriteString(" servers=")
		for i, s := range c.Servers {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s@%s(%s)", s.ID, s.Address, s.Suffrage)
		}
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String())
}

func payload(b *strings.Builder, name string, v []byte) {
	if isText(v) {
		fmt.Fprintf(b, " %s=%s", name, strconv.Quote(string(v)))
	} else {
		fmt.Fprintf(b, " %s_base64=%s", name, base64.StdEncoding.EncodeToString(v))
	}
}

// keyJSON is one line of dump -json of a state machine: the path of the
// bucket from the root, and the key and value as text when printable, else
// in base64 (key_base64, value_base64).
type keyJSON struct {
	Bucket      []string `json:"bucket"`
	Key         *string  `json:"key,omitempty"`
	KeyBase64   string   `json:"key_base64,omitempty"`
	Value       *string  `json:"value,omitempty"`
	ValueBase64 string   `json:"value_base64,omitempty"`
	Nested      bool     `json:"nested_bucket,omitempty"` // the key names a nested bucket; no value
}
