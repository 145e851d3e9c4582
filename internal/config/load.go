package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// ErrVersion is returned by Load for --version: the caller prints the
// version and exits 0.
var ErrVersion = errors.New("version requested")

// ErrHelp is returned by Load for --help / -h, after the usage is printed.
var ErrHelp = pflag.ErrHelp

// EnvPrefix prefixes every environment variable sipedge reads.
const EnvPrefix = "SIPEDGE_"

// Load builds the configuration from defaults, the YAML file named by
// --config (or SIPEDGE_CONFIG), SIPEDGE_* variables and flags, in that order
// of increasing precedence, and validates it.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := Default()
	fs := pflag.NewFlagSet("sipedge", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false // the order of the Config struct groups related flags
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sipedge [flags]\n\n"+
			"Every flag is also a key of the --config YAML file (dashes as underscores)\n"+
			"and an environment variable %sKEY; flag > environment > file > default.\n\nFlags:\n", EnvPrefix)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", getenv(EnvPrefix+"CONFIG"), "YAML configuration `file`")
	version := fs.Bool("version", false, "print the version and exit")
	setters := registerFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *version {
		return Config{}, ErrVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if *configFile != "" {
		if err := loadFile(*configFile, &cfg); err != nil {
			return Config{}, err
		}
	}
	for _, s := range setters {
		if v := getenv(EnvPrefix + strings.ToUpper(s.key)); v != "" {
			if err := s.set(v); err != nil {
				return Config{}, &FieldError{Field: s.key, Value: v, Err: fmt.Errorf("from %s%s: %w", EnvPrefix, strings.ToUpper(s.key), err)}
			}
		}
	}
	// Flags win: apply only the ones given on the command line.
	var flagErr error
	fs.Visit(func(f *pflag.Flag) {
		for _, s := range setters {
			if s.flag == f.Name && flagErr == nil {
				if err := s.set(f.Value.String()); err != nil {
					flagErr = &FieldError{Field: s.key, Value: f.Value.String(), Err: err}
				}
			}
		}
	})
	if flagErr != nil {
		return Config{}, flagErr
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func loadFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	if data, err = listenListToText(data); err != nil { // listen as a YAML list (listen.go)
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key is a mistake, not a silent default
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	return nil
}

// setter applies a textual value to one field.
type setter struct {
	key, flag string
	set       func(string) error
}

// registerFlags declares one flag per tagged field, typed after the field
// (string, int, duration) for --help; values are only recorded here and
// applied later so flags can override the file and the environment.
func registerFlags(fs *pflag.FlagSet, cfg *Config) []setter {
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	setters := make([]setter, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		name := strings.ReplaceAll(key, "_", "-")
		field := v.Field(i)
		fs.Var(&flagValue{text: fmt.Sprint(field.Interface()), kind: kindOf(field)}, name, f.Tag.Get("usage"))
		setters = append(setters, setter{key: key, flag: name, set: fieldSetter(field)})
	}
	return setters
}

func fieldSetter(field reflect.Value) func(string) error {
	return func(s string) error {
		switch field.Interface().(type) {
		case string:
			field.SetString(s)
		case int:
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return errors.New("not an integer")
			}
			field.SetInt(int64(n))
		case time.Duration:
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return errors.New("not a duration (e.g. 500ms, 2s)")
			}
			field.SetInt(int64(d))
		default:
			return fmt.Errorf("unsupported field type %s", field.Type())
		}
		return nil
	}
}

// flagValue holds a flag's text until Load applies it to its field.
type flagValue struct {
	text string
	kind string // string | int | duration, shown by --help
}

func (v *flagValue) String() string { return v.text }
func (v *flagValue) Type() string   { return v.kind }

// Set records the text; Load applies it to its field after the file and
// the environment, and a bad value fails there as a FieldError naming it.
func (v *flagValue) Set(s string) error { v.text = s; return nil }

func kindOf(field reflect.Value) string {
	switch field.Interface().(type) {
	case int:
		return "int"
	case time.Duration:
		return "duration"
	default:
		return "string"
	}
}
