"""The app's tabs: each module builds one tab's layout and holds its handlers."""
