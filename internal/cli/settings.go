package cli

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Setting binds one configuration value to its flag and its TSINJECT_*
// environment variable (which the controllers and the injector set), with
// one default and one parser for both.
type Setting struct {
	Flag, Env, Help, Default string
	Set                      func(string) error
	// Switch: the flag may be given without a value, meaning true.
	Switch bool
}

// Settings is a table of settings bound to a flag set.
type Settings struct {
	errs []error
}

// Bind registers each setting's flag and applies its environment value
// (or default) now, so flags parsed later win. A bad environment value is
// kept for Err, naming the variable: the flag may still override it.
func Bind(fs *flag.FlagSet, table []Setting) *Settings {
	s := &Settings{}
	for _, st := range table {
		val := EnvDefault(st.Env, st.Default)
		help := fmt.Sprintf("%s (default %q)", st.Help, st.Default)
		if st.Env != "" {
			help = fmt.Sprintf("%s (env %s, default %q)", st.Help, st.Env, st.Default)
		}
		if err := st.Set(val); err != nil {
			name := "default of --" + st.Flag
			if st.Env != "" {
				name = "$" + st.Env
			}
			s.errs = append(s.errs, fmt.Errorf("%s=%q: %v", name, val, err))
		}
		if st.Switch {
			fs.BoolFunc(st.Flag, help, st.Set)
		} else {
			fs.Func(st.Flag, help, st.Set)
		}
	}
	return s
}

// Err reports the environment values that did not parse.
func (s *Settings) Err() error { return errors.Join(s.errs...) }

// String sets *p.
func String(p *string) func(string) error {
	return func(v string) error { *p = v; return nil }
}

// Bool parses into *p.
func Bool(p *bool) func(string) error {
	return func(v string) (err error) {
		*p, err = strconv.ParseBool(v)
		return err
	}
}

// Duration parses a non-negative Go duration (20s, 2m) into *p.
func Duration(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration such as 20s", v)
		}
		*p = d
		return nil
	}
}

// Port parses a TCP or UDP port (1-65535) into *p.
func Port(p *uint16) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a port from 1 to 65535", v)
		}
		*p = uint16(n)
		return nil
	}
}

// OneOf sets *p to v if v is one of allowed.
func OneOf(p *string, allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("allowed: %s", strings.Join(allowed, ", "))
	}
}
