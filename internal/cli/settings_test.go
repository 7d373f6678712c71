package cli

import (
	"flag"
	"strings"
	"testing"
	"time"
)

// One table binds flag and environment: the environment sets the default,
// a flag overrides it, and a bad value is reported naming the variable
// (or the flag) and what is allowed.
func TestSettings(t *testing.T) {
	type conf struct {
		mode  string
		wait  time.Duration
		port  uint16
		debug bool
	}
	table := func(c *conf) []Setting {
		return []Setting{
			{Flag: "mode", Env: "TSINJECT_TEST_MODE", Help: "mode", Default: "auth", Set: OneOf(&c.mode, "auth", "noauth")},
			{Flag: "wait", Env: "TSINJECT_TEST_WAIT", Help: "wait", Default: "2m", Set: Duration(&c.wait)},
			{Flag: "port", Env: "TSINJECT_TEST_PORT", Help: "port", Default: "9002", Set: Port(&c.port)},
			{Flag: "debug", Help: "debug", Default: "false", Set: Bool(&c.debug), Switch: true},
		}
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    conf
		wantErr string // in Err() or Parse's error
	}{
		{name: "defaults", want: conf{"auth", 2 * time.Minute, 9002, false}},
		{name: "environment", env: map[string]string{"TSINJECT_TEST_MODE": "noauth", "TSINJECT_TEST_WAIT": "5s", "TSINJECT_TEST_PORT": "80"},
			want: conf{"noauth", 5 * time.Second, 80, false}},
		{name: "flags beat environment", env: map[string]string{"TSINJECT_TEST_MODE": "noauth"}, args: []string{"--mode=auth", "--debug"},
			want: conf{"auth", 2 * time.Minute, 9002, true}},
		{name: "bad environment names the variable", env: map[string]string{"TSINJECT_TEST_MODE": "open"},
			wantErr: `$TSINJECT_TEST_MODE="open": allowed: auth, noauth`},
		{name: "bad port", env: map[string]string{"TSINJECT_TEST_PORT": "70000"}, wantErr: `"70000" is not a port from 1 to 65535`},
		{name: "negative duration", args: []string{"--wait=-1s"}, wantErr: `"-1s" is not a duration such as 20s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var c conf
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			s := Bind(fs, table(&c))
			err := fs.Parse(tc.args)
			if err == nil {
				err = s.Err()
			}
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case c != tc.want:
				t.Errorf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}
