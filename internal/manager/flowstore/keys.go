package flowstore

import (
	"encoding/binary"
	"time"
)

// The key space. Every key begins with one byte naming its table:
//
//	'f' time id               a flow (JSON of Flow), ordered by time
//	'w' bucket name 0 time id  the workload index (either end's workload)
//	'n' bucket ns 0 time id    the namespace index
//	's' host 0 stream          a stream's highest sequence number seen
//	'c'                        the counts (JSON of Counts)
//
// time is the flow's end in Unix nanoseconds and id a number given at
// insertion, both big-endian, so that the byte order is the time order.
// The indexes begin with the hour of the flow (bucket) so that retention
// by age drops whole hours of them with one range deletion, and a query
// of one workload over a time range reads only the hours it spans. An
// index entry whose flow retention has already dropped is skipped.
const (
	tabFlow      = 'f'
	tabWorkload  = 'w'
	tabNamespace = 'n'
	tabStream    = 's'
	tabCounts    = 'c'
)

const bucketWidth = time.Hour

func flowKey(t time.Time, id uint64) []byte {
	k := make([]byte, 0, 17)
	k = append(k, tabFlow)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, id)
}

func bucketOf(t time.Time) uint64 { return uint64(t.UnixNano() / int64(bucketWidth)) }

// indexPrefix is the prefix of one name's entries in one bucket.
func indexPrefix(tab byte, bucket uint64, name string) []byte {
	k := make([]byte, 0, 10+len(name)+16)
	k = append(k, tab)
	k = binary.BigEndian.AppendUint64(k, bucket)
	k = append(k, name...)
	return append(k, 0)
}

// indexKey is an index entry: its suffix is the flow key's (time, id).
func indexKey(tab byte, t time.Time, name string, id uint64) []byte {
	k := indexPrefix(tab, bucketOf(t), name)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, id)
}

// flowKeyOfIndex turns an index entry's key back into its flow's key.
func flowKeyOfIndex(k []byte) []byte {
	if len(k) < 16 {
		return nil
	}
	out := make([]byte, 0, 17)
	out = append(out, tabFlow)
	return append(out, k[len(k)-16:]...)
}

func timeOfFlowKey(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[1:9])))
}

func streamKey(host, stream string) []byte {
	k := make([]byte, 0, 2+len(host)+len(stream))
	k = append(k, tabStream)
	k = append(k, host...)
	k = append(k, 0)
	return append(k, stream...)
}

// timeBound is the smallest flow key at or after t.
func timeBound(t time.Time) []byte {
	k := []byte{tabFlow}
	if t.UnixNano() < 0 {
		return append(k, make([]byte, 16)...)
	}
	return binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
}

func bucketBound(tab byte, bucket uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tab}, bucket)
}
