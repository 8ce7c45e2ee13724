"""The Docker-free local Supabase stack: Postgres, REST, Auth, Realtime, Functions."""
