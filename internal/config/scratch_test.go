package config
import "testing"
func TestScratch(t *testing.T) {
	c, err := Load("../../posthorn.example.toml")
	t.Logf("%+v %v", c, err)
}
