"""The controller: snapshots, cycle, writer, and the watches that keep routing objects in line."""
