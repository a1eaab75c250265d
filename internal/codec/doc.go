// Package codec owns raftbolt's on-disk record formats: log entries,
// cluster configuration records, the format record and the fixed-width
// integers used as keys and values.
//
// Every record starts with a version byte (the format record starts with its
// magic) and ends with a CRC32C (Castagnoli) of all the bytes before it. All
// multi-byte integers inside records are little-endian; log keys and stored
// uint64 values are big-endian so that bbolt's byte order is numeric order.
//
// The package never touches bbolt or the file system. Decoders treat their
// input as untrusted: every length is checked against the bytes actually
// present before anything is allocated, so a corrupt record can make a
// decoder return an error but never panic or allocate more than the record's
// own size.
package codec
