// Package load reads policy objects and inventories from files,
// directories and standard input for the commands that take files
// (`check`, `explain`, `verdicts`, `apply`). Each file is read by
// internal/objects, the one reader of objects; load reports every error
// of a run and returns nothing when anything is wrong: never half a set.
package load

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// MaxFileSize bounds one input file.
const MaxFileSize = objects.MaxDocumentSize

// Paths reads every file named, and every .yaml, .yml and .json file inside
// the directories named (recursively, in name order). "-" is standard input.
// A file named more than once (by itself and inside a directory named too,
// or by two spellings of one path) is read once, where it is first named.
func Paths(paths []string) (*policy.Set, error) {
	var errs source.Errors
	set := &policy.Set{}
	var seen []os.FileInfo
	for _, p := range paths {
		files, err := Expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if f != "-" {
				st, err := os.Stat(f)
				if err != nil {
					return nil, fmt.Errorf("load: %w", err)
				}
				if sameAsOne(st, seen) {
					continue
				}
				seen = append(seen, st)
			}
			data, err := readFile(f)
			if err != nil {
				return nil, err
			}
			s, ferrs := Bytes(f, data)
			errs = append(errs, ferrs...)
			if s != nil {
				set.Merge(s)
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return set, nil
}

func sameAsOne(st os.FileInfo, seen []os.FileInfo) bool {
	for _, s := range seen {
		if os.SameFile(st, s) {
			return true
		}
	}
	return false
}

// Expand lists the files a path names: the file itself, or every .yaml,
// .yml and .json file below a directory, sorted; "-" stays as it is.
func Expand(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("load: directory %s holds no .yaml, .yml or .json file", p)
	}
	sort.Strings(files)
	return files, nil
}

func readFile(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load: read %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("load: %s is larger than %d MiB", name, MaxFileSize>>20)
	}
	return data, nil
}

// Bytes reads the objects of one file into the set they make.
func Bytes(file string, data []byte) (*policy.Set, source.Errors) {
	objs, errs := objects.Read(file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	set := &policy.Set{}
	for _, o := range objs {
		set.Merge(o.Set)
	}
	return set, nil
}

// Inventory reads an inventory file: namespaces and workloads.
func Inventory(file string) (*policy.Set, error) {
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	set, errs := objects.ReadInventory(file, data)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return set, nil
}
