package objects

import "github.com/bulkhead-dev/bulkhead/internal/source"

// ReadSequential is Read without the parallel path.
func ReadSequential(file string, data []byte) ([]*Object, source.Errors) {
	return readSequential(file, data)
}

// ReadParallel is Read with the parallel path for streams of any size;
// ok is false when it gave the stream to the sequential reader.
func ReadParallel(file string, data []byte, workers int) ([]*Object, source.Errors, bool) {
	return readParallelWith(file, data, workers, 0)
}
